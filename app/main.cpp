#include <cstdio>
int main() { std::puts("esmd " ESMD_VERSION); }
