#pragma once
// Hashes and MACs over OpenSSL: what the AWS protocols and the checks of checkpoints need.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dlagent {

std::string Sha256(std::string_view data);                            // 32 raw bytes
std::string HmacSha256(std::string_view key, std::string_view data);  // 32 raw bytes
std::string Md5(std::string_view data);                               // 16 raw bytes
std::string HexEncode(std::string_view bytes);                        // lower case
// The bytes of hex text (either case); nullopt for an odd length or a character that is not a hex digit.
std::optional<std::string> HexDecode(std::string_view hex);
// n bytes from the system's CSPRNG, hex-encoded: names and nonces nobody can guess.
std::string RandomHex(size_t n);
// A seed for jitter and shuffles (std::mt19937_64), from the same generator. Used in place of
// std::random_device, whose libstdc++ needs a newer C library (arc4random, glibc 2.36) than the agent's
// packages may assume (docs/deploy.md).
uint64_t RandomSeed();
// Constant-time comparison, for MACs.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace dlagent
