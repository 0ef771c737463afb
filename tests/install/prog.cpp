// Built against an installed mallard-secure with pkg-config (scripts/test-install): C++ new
// and delete go to mallard, and its own functions link. Exit 0 on success.
#include <mallard.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

int main() {
    std::vector<std::unique_ptr<std::string>> v;
    for (int i = 0; i < 1000; i++) v.push_back(std::make_unique<std::string>(100 + i % 50, 'x'));
    struct mallard_stats s;
    mallard_stats(&s);
    size_t usable = mallard_usable_size(v.back().get());
    if (s.live_bytes < 100000 || usable < sizeof(std::string)) {
        std::fprintf(stderr, "prog: mallard does not serve this program's new (live %lld)\n", (long long)s.live_bytes);
        return 1;
    }
    std::printf("prog++: ok, %lld live bytes\n", (long long)s.live_bytes);
    return 0;
}
