#include "agent/ps/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "bootstrap/common/atomic_file.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/env.h"

namespace dlagent::ps {
namespace {

constexpr char kMagic[8] = {'D', 'L', 'P', 'S', 'C', 'K', 'P', '1'};
constexpr size_t kShaBytes = 32;

Status Bad(const std::string& what, const std::string& why) {
  return Status::FailedPrecondition("dlps-checkpoint", what + " is " + why + "; it was not loaded");
}

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void PutFloats(std::string& out, const std::vector<float>& v) { out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)); }

// Reads values off the front of a buffer, refusing to read past its end.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  bool Get(T* v) {
    if (data_.size() < sizeof(T)) return false;
    std::memcpy(v, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetFloats(uint64_t n, std::vector<float>* v) {
    if (n > data_.size() / sizeof(float)) return false;
    v->resize(n);
    if (n == 0) return true;
    std::memcpy(v->data(), data_.data(), n * sizeof(float));
    data_.remove_prefix(n * sizeof(float));
    return true;
  }
  bool empty() const { return data_.empty(); }

 private:
  std::string_view data_;
};

std::string Dir(const std::string& dir, const std::string& name) { return dir + "/" + name; }

// A checkpoint's directory, made if absent. The checkpoint root is shared storage that users can write to: a
// directory there that is a link, or that another user made, is refused, so that files written as root never
// land where someone else pointed them.
// path must be the server's own: a directory (want_dir) or a regular file, not a link, owned by this process's
// user. Restores check the same, so that a file another user planted (a link to a root-only file, a FIFO) is
// neither read nor measured.
Status CheckOwn(const std::string& path, bool want_dir) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno("dlps-checkpoint", "lstat " + path, errno);
  if (S_ISLNK(st.st_mode) || (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) {
    return Status::FailedPrecondition(
        "dlps-checkpoint", path + " is a symbolic link or not a " + (want_dir ? "directory" : "regular file") + "; remove it or choose another name");
  }
  if (st.st_uid != ::geteuid()) {
    return Status::FailedPrecondition("dlps-checkpoint", path + " belongs to uid " + std::to_string(st.st_uid) + ", not to the server (uid " +
                                                             std::to_string(::geteuid()) + "); remove it or choose another name");
  }
  return Status::Ok();
}

// A directory made if absent with `mode` (not changed when it exists), then checked as CheckOwn does.
Status MakeOwnDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return Status::FromErrno("dlps-checkpoint", "mkdir " + path, errno);
  return CheckOwn(path, true);
}

Status MakeCheckpointDir(Env& env, const std::string& dir, const std::string& name) {
  const std::string path = Dir(dir, name);
  RETURN_IF_ERROR(env.CreateDirs(path, 0755));
  return CheckOwn(path, true);
}

}  // namespace

Status CheckCheckpointName(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 200 && name != "." && name != ".." &&
                  name.find_first_not_of(
                      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"
                      "XYZ0123456789._-") == std::string::npos;
  if (ok) return Status::Ok();
  return Status::InvalidArgument("dlps-checkpoint", "checkpoint name '" + name +
                                                        "' must be letters, digits, '.', '_' and '-' (one directory under "
                                                        "the server's checkpoint directory)");
}

std::string ShardFileName(uint32_t index, uint32_t count) { return "server-" + std::to_string(index) + "-of-" + std::to_string(count) + ".dlps"; }

std::string EncodeShardFile(const std::vector<Shard::SliceState>& slices) {
  std::string out(kMagic, sizeof kMagic);
  Put<uint32_t>(out, static_cast<uint32_t>(slices.size()));
  Put<uint32_t>(out, 0);
  for (const auto& s : slices) {
    const OptimizerConfig& o = s.optimizer;
    Put(out, s.key);
    Put(out, s.chunk);
    Put<uint32_t>(out, static_cast<uint32_t>(o.kind));
    for (float f : {o.learning_rate, o.momentum, o.weight_decay, o.beta1, o.beta2, o.epsilon, o.rescale}) Put(out, f);
    Put<uint64_t>(out, s.state.steps);
    Put<uint64_t>(out, s.weights->size());
    Put<uint64_t>(out, s.state.m.size());
    Put<uint64_t>(out, s.state.v.size());
    PutFloats(out, *s.weights);
    PutFloats(out, s.state.m);
    PutFloats(out, s.state.v);
  }
  out += Sha256(out);
  return out;
}

Result<std::vector<Shard::SliceState>> DecodeShardFile(std::string_view data, const std::string& what) {
  if (data.size() < sizeof kMagic + 8 + kShaBytes || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) {
    return Bad(what, "not a dlps checkpoint file (or cut short)");
  }
  const std::string_view body = data.substr(0, data.size() - kShaBytes);
  if (!ConstantTimeEquals(Sha256(body), data.substr(body.size()))) return Bad(what, "corrupt (its SHA-256 does not match its contents)");
  Reader r(body.substr(sizeof kMagic));
  uint32_t count = 0, zero = 0;
  r.Get(&count);
  r.Get(&zero);
  std::vector<Shard::SliceState> slices;
  for (uint32_t i = 0; i < count; ++i) {
    Shard::SliceState s;
    uint32_t kind = 0;
    uint64_t length = 0, m = 0, v = 0;
    OptimizerConfig& o = s.optimizer;
    std::vector<float> weights;
    const bool ok = r.Get(&s.key) && r.Get(&s.chunk) && r.Get(&kind) && r.Get(&o.learning_rate) && r.Get(&o.momentum) && r.Get(&o.weight_decay) &&
                    r.Get(&o.beta1) && r.Get(&o.beta2) && r.Get(&o.epsilon) && r.Get(&o.rescale) && r.Get(&s.state.steps) && r.Get(&length) &&
                    r.Get(&m) && r.Get(&v) && kind <= static_cast<uint32_t>(OptimizerConfig::Kind::kAdam) && (m == 0 || m == length) &&
                    (v == 0 || v == length) && r.GetFloats(length, &weights) && r.GetFloats(m, &s.state.m) && r.GetFloats(v, &s.state.v);
    if (!ok) return Bad(what, "malformed at slice " + std::to_string(i) + " of " + std::to_string(count));
    o.kind = static_cast<OptimizerConfig::Kind>(kind);
    s.weights = std::make_shared<const std::vector<float>>(std::move(weights));
    slices.push_back(std::move(s));
  }
  if (!r.empty()) return Bad(what, "malformed (bytes after the last slice)");
  return slices;
}

std::string EncodeManifest(uint32_t servers, const std::vector<CheckpointFile>& files) {
  nlohmann::json j;
  j["format"] = 1;
  j["servers"] = servers;
  j["files"] = nlohmann::json::array();
  for (const auto& f : files) j["files"].push_back({{"name", f.name}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  return j.dump(2) + "\n";
}

Result<CheckpointFile> ManifestEntry(std::string_view manifest, const std::string& what, uint32_t index, uint32_t count) {
  nlohmann::json j = nlohmann::json::parse(manifest, nullptr, /*allow_exceptions=*/false);
  // Types before values: the manifest sits on shared storage that users can write, and nlohmann's value() throws
  // on a "format" of another type.
  if (j.is_discarded() || !j.is_object() || !j.contains("format") || !j["format"].is_number_integer() || j["format"] != 1 || !j.contains("servers") ||
      !j["servers"].is_number_unsigned() || !j.contains("files") || !j["files"].is_array()) {
    return Bad(what, "not a dlps checkpoint manifest");
  }
  const uint64_t servers = j["servers"];
  if (servers != count) {
    return Status::FailedPrecondition("dlps-checkpoint", what + " was written by " + std::to_string(servers) + " servers; this job has " +
                                                             std::to_string(count) + " (the keys are placed by the server count)");
  }
  const std::string want = ShardFileName(index, count);
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("bytes") || !f["bytes"].is_number_unsigned() ||
        !f.contains("sha256") || !f["sha256"].is_string()) {
      return Bad(what, "malformed (a file entry without name, bytes and sha256)");
    }
    if (f["name"] == want) return CheckpointFile{want, f["bytes"].get<uint64_t>(), f["sha256"].get<std::string>()};
  }
  return Bad(what, "incomplete (it lists no " + want + ")");
}

Result<CheckpointFile> WriteShardCheckpoint(Shard& shard, const std::string& dir, const std::string& name, uint32_t index, uint32_t count) {
  RETURN_IF_ERROR(CheckCheckpointName(name));
  auto env = NewPosixEnv();
  RETURN_IF_ERROR(MakeCheckpointDir(*env, dir, name));
  const std::string data = EncodeShardFile(shard.Export());
  // The manifest records the file's trailing SHA-256 (of everything before it): hashed once, here.
  CheckpointFile f{ShardFileName(index, count), data.size(), HexEncode(std::string_view(data).substr(data.size() - kShaBytes))};
  RETURN_IF_ERROR(WriteFileAtomically(*env, Dir(dir, name) + "/" + f.name, data));
  return f;
}

Status WriteManifest(const std::string& dir, const std::string& name, uint32_t count, const std::vector<CheckpointFile>& files) {
  RETURN_IF_ERROR(CheckCheckpointName(name));
  if (files.size() != count) return Status::InvalidArgument("dlps-checkpoint", "a manifest needs one file per server");
  // The entries come from a worker: each must be what server i writes (its file's name, a SHA-256 in hex).
  for (uint32_t i = 0; i < count; ++i) {
    const CheckpointFile& f = files[i];
    if (f.name != ShardFileName(i, count) || f.sha256.size() != 2 * kShaBytes || !HexDecode(f.sha256)) {
      return Status::InvalidArgument("dlps-checkpoint", "checkpoint " + name + ": entry " + std::to_string(i) + " is not server " +
                                                            std::to_string(i) + "'s file (" + ShardFileName(i, count) + " and a hex SHA-256)");
    }
  }
  auto env = NewPosixEnv();
  RETURN_IF_ERROR(MakeCheckpointDir(*env, dir, name));
  return WriteFileAtomically(*env, Dir(dir, name) + "/" + kManifestName, EncodeManifest(count, files));
}

Status RestoreShardCheckpoint(Shard& shard, const std::string& dir, const std::string& name, uint32_t index, uint32_t count) {
  RETURN_IF_ERROR(CheckCheckpointName(name));
  auto env = NewPosixEnv();
  const std::string manifest_path = Dir(dir, name) + "/" + kManifestName;
  if (!env->FileExists(manifest_path)) {
    return Status::NotFound("dlps-checkpoint", "checkpoint " + Dir(dir, name) + " is missing or incomplete: it has no " + kManifestName +
                                                   " (written last, once every server's file is in place)");
  }
  RETURN_IF_ERROR(CheckOwn(Dir(dir, name), true));
  RETURN_IF_ERROR(CheckOwn(manifest_path, false));
  ASSIGN_OR_RETURN(std::string manifest, env->ReadFile(manifest_path, 1 << 20));
  ASSIGN_OR_RETURN(CheckpointFile entry, ManifestEntry(manifest, manifest_path, index, count));
  const std::string path = Dir(dir, name) + "/" + entry.name;
  if (!env->FileExists(path)) return Bad(path, "missing");
  RETURN_IF_ERROR(CheckOwn(path, false));
  // At most the size the manifest gives: a file that grew (or a link to something endless) is refused unread.
  Result<std::string> read = env->ReadFile(path, entry.bytes);
  if (!read.ok() && read.status().code() == StatusCode::kResourceExhausted)
    return Bad(path, "grown past the manifest's " + std::to_string(entry.bytes) + " bytes");
  ASSIGN_OR_RETURN(std::string data, std::move(read));
  if (data.size() != entry.bytes) {
    return Bad(path, "cut short or grown: " + std::to_string(data.size()) + " bytes where the manifest says " + std::to_string(entry.bytes));
  }
  // The trailer must be the one the manifest lists (no hashing), then match the contents (one hash, in Decode).
  if (data.size() < kShaBytes || HexEncode(std::string_view(data).substr(data.size() - kShaBytes)) != entry.sha256) {
    return Bad(path, "not the file the manifest lists (its SHA-256 differs)");
  }
  ASSIGN_OR_RETURN(auto slices, DecodeShardFile(data, path));
  return shard.Import(std::move(slices)).Annotate("restore from " + path);
}

Result<std::string> UserCheckpointDir(const std::string& root, uint32_t uid) {
  RETURN_IF_ERROR(MakeOwnDir(root + "/users", 0755));
  const std::string dir = root + "/users/" + std::to_string(uid);
  RETURN_IF_ERROR(MakeOwnDir(dir, 0700));
  // Made before: its mode may have been changed since (by root); it must still be closed to the others.
  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::FailedPrecondition("dlps-checkpoint", dir + " is open to other users (mode " + mode + "); make it 0700 (chmod 700 " + dir + ")");
  }
  return dir;
}

std::string CheckpointElsewhere(const std::string& root, const std::string& name, uint32_t uid) {
  if (!CheckCheckpointName(name).ok()) return "";
  auto has = [&](const std::string& dir) {
    struct stat st;
    return ::lstat((dir + "/" + name + "/" + kManifestName).c_str(), &st) == 0;
  };
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root + "/users", ec)) {
    const std::string other = e.path().filename().string();
    if (other != std::to_string(uid) && has(e.path().string())) {
      return "uid " + other + " has a checkpoint named " + name + ": each user's jobs see only their own";
    }
  }
  if (has(root)) {
    return "a checkpoint named " + name + " is in " + root + ", written before checkpoints were kept per user: root can move it to " + root +
           "/users/" + std::to_string(uid) + "/";
  }
  return "";
}

}  // namespace dlagent::ps
