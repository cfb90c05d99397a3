// optin: stand-in for ankerl::unordered_dense, which Debian does not package.
// mediasoup uses it only as a faster drop-in for the std hash containers, so the
// std containers keep the same semantics (they are slower, not different).
#pragma once
#include <functional>
#include <unordered_map>
#include <unordered_set>

namespace ankerl::unordered_dense
{
	template<class T>
	using hash = std::hash<T>;

	template<class K, class V, class H = std::hash<K>, class E = std::equal_to<K>>
	using map = std::unordered_map<K, V, H, E>;

	template<class K, class H = std::hash<K>, class E = std::equal_to<K>>
	using set = std::unordered_set<K, H, E>;
} // namespace ankerl::unordered_dense
