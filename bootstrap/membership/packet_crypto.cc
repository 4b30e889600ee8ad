#include "bootstrap/membership/packet_crypto.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace dlagent::swim {
namespace {

constexpr size_t kNonce = 12, kTag = 16;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

Result<Keyring> Keyring::Create(std::map<uint8_t, std::string> keys, uint8_t primary, std::string cluster) {
  for (const auto& [id, key] : keys) {
    if (key.size() != 32) {
      return Status::InvalidArgument("gossip",
                                     "key " + std::to_string(id) + " is " + std::to_string(key.size()) + " bytes; AES-256 keys are 32 bytes");
    }
  }
  if (!keys.count(primary)) return Status::InvalidArgument("gossip", "primary key " + std::to_string(primary) + " is not installed");
  Keyring k;
  k.keys_ = std::move(keys);
  k.primary_ = primary;
  k.aad_ = std::move(cluster);
  return k;
}

std::string Keyring::Seal(std::string_view plaintext, int64_t sent_unix_ms) const {
  std::string inner(8 + plaintext.size(), '\0');
  std::memcpy(inner.data(), &sent_unix_ms, 8);
  std::memcpy(inner.data() + 8, plaintext.data(), plaintext.size());
  std::string out(1 + kNonce + inner.size() + kTag, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  p[0] = primary_;
  RAND_bytes(p + 1, kNonce);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  const std::string& key = keys_.at(primary_);
  int len = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), p + 1);
  EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()), static_cast<int>(aad_.size()));
  EVP_EncryptUpdate(ctx.get(), p + 1 + kNonce, &len, reinterpret_cast<const unsigned char*>(inner.data()), static_cast<int>(inner.size()));
  EVP_EncryptFinal_ex(ctx.get(), p + 1 + kNonce + len, &len);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, p + 1 + kNonce + inner.size());
  return out;
}

Result<Keyring::Opened> Keyring::Open(std::string_view packet) const {
  if (packet.size() < kOverhead) return Status::InvalidArgument("gossip", "packet of " + std::to_string(packet.size()) + " bytes is too short");
  const auto* p = reinterpret_cast<const unsigned char*>(packet.data());
  auto key = keys_.find(p[0]);
  if (key == keys_.end()) return Status::PermissionDenied("gossip", "packet sealed with unknown key id " + std::to_string(p[0]));
  const size_t n = packet.size() - 1 - kNonce - kTag;  // the time and the payload
  std::string inner(n, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key->second.data()), p + 1);
  EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad_.data()), static_cast<int>(aad_.size()));
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(inner.data()), &len, p + 1 + kNonce, static_cast<int>(n));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, const_cast<unsigned char*>(p + 1 + kNonce + n));
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(inner.data()) + len, &len) != 1) {
    return Status::PermissionDenied("gossip", "packet failed authentication (wrong cluster key or name, or tampered)");
  }
  Opened out;
  std::memcpy(&out.sent_unix_ms, inner.data(), 8);
  out.plaintext = inner.substr(8);
  out.nonce.assign(packet.data() + 1, kNonce);
  return out;
}

int64_t NowUnixMs() { return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

Status ReplayWindow::Admit(const Keyring::Opened& packet, int64_t now_unix_ms) {
  const int64_t sent = packet.sent_unix_ms;
  if (sent < now_unix_ms - window_ms_ || sent > now_unix_ms + window_ms_) {
    return Status::PermissionDenied("gossip", "packet sealed " + std::to_string((now_unix_ms - sent) / 1000) +
                                                  " s ago (a replay, or clocks apart by more than " + std::to_string(window_ms_ / 1000) +
                                                  " s: check NTP on both nodes)");
  }
  if (sent <= floor_ms_ || seen_.contains(packet.nonce)) return Status::PermissionDenied("gossip", "packet replayed");
  while (!order_.empty() && (order_.front().first < now_unix_ms - window_ms_ || order_.size() >= capacity_)) {
    if (order_.front().first >= now_unix_ms - window_ms_) floor_ms_ = std::max(floor_ms_, order_.front().first);  // forgotten early
    seen_.erase(order_.front().second);
    order_.pop_front();
  }
  seen_.insert(packet.nonce);
  order_.emplace_back(sent, packet.nonce);
  return Status::Ok();
}

}  // namespace dlagent::swim
