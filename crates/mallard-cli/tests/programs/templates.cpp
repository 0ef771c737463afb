// For `mallard report`'s test: allocations inside C++ templates whose mangled names the
// cpp_demangle crate leaves as they are (enable_if in make_shared's return type).
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

int main() {
    std::vector<std::shared_ptr<std::string>> keep;
    for (int i = 0; i < 100; i++) keep.push_back(std::make_shared<std::string>(40 + i, 'x'));
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 100; i++) m[std::to_string(i)].push_back(i);
    std::printf("%zu %zu\n", keep.size(), m.size());
    return 0;
}
