#include "bootstrap/membership/packet_crypto.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

namespace dlagent::swim {
namespace {

constexpr size_t kNonce = 12, kTag = 16;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

Result<Keyring> Keyring::Create(std::map<uint8_t, std::string> keys, uint8_t primary, std::string cluster) {
  for (const auto& [id, key] : keys) {
    if (key.size() != 32) {
      return Status::InvalidArgument("gossip", "key " + std::to_string(id) + " is " + std::to_string(key.size()) +
                                                   " bytes; AES-256 keys are 32 bytes");
    }
  }
  if (!keys.count(primary)) return Status::InvalidArgument("gossip", "primary key " + std::to_string(primary) + " is not installed");
  Keyring k;
  k.keys_ = std::move(keys);
  k.primary_ = primary;
  k.aad_ = std::move(cluster);
  return k;
}

std::string Keyring::Seal(std::string_view plaintext) const {
  std::string out(1 + kNonce + plaintext.size() + kTag, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  p[0] = primary_;
  RAND_bytes(p + 1, kNonce);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  const std::string& key = keys_.at(primary_);
  int len = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), p + 1);
  EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()), static_cast<int>(aad_.size()));
  EVP_EncryptUpdate(ctx.get(), p + 1 + kNonce, &len, reinterpret_cast<const unsigned char*>(plaintext.data()), static_cast<int>(plaintext.size()));
  EVP_EncryptFinal_ex(ctx.get(), p + 1 + kNonce + len, &len);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, p + 1 + kNonce + plaintext.size());
  return out;
}

Result<std::string> Keyring::Open(std::string_view packet) const {
  if (packet.size() < kOverhead) return Status::InvalidArgument("gossip", "packet of " + std::to_string(packet.size()) + " bytes is too short");
  const auto* p = reinterpret_cast<const unsigned char*>(packet.data());
  auto key = keys_.find(p[0]);
  if (key == keys_.end()) return Status::PermissionDenied("gossip", "packet sealed with unknown key id " + std::to_string(p[0]));
  const size_t n = packet.size() - kOverhead;
  std::string out(n, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key->second.data()), p + 1);
  EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()), static_cast<int>(aad_.size()));
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, p + 1 + kNonce, static_cast<int>(n));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, const_cast<unsigned char*>(p + 1 + kNonce + n));
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &len) != 1) {
    return Status::PermissionDenied("gossip", "packet failed authentication (wrong cluster key or name, or tampered)");
  }
  return out;
}

}  // namespace dlagent::swim
