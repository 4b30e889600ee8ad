#include "bootstrap/node/mount_manager.h"

#include <netdb.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <random>
#include <thread>

#include "bootstrap/common/crypto.h"
#include "bootstrap/common/duration.h"

namespace dlagent {

namespace {

// Runs `fn` on a thread of its own and waits up to `timeout` for its result. A call into a hung hard mount
// may block forever (killably only): the thread owns what it uses and is left behind; it ends when the mount
// answers or is aborted.
template <typename T>
Result<T> Within(Duration timeout, std::function<Result<T>()> fn, const std::string& late) {
  auto result = std::make_shared<std::promise<Result<T>>>();
  std::future<Result<T>> done = result->get_future();
  std::thread([fn = std::move(fn), result] { result->set_value(fn()); }).detach();
  if (done.wait_for(timeout) != std::future_status::ready) return Status::DeadlineExceeded("storage", late);
  return done.get();
}

}  // namespace

Result<uint64_t> FreeBytesWithin(const std::string& path, Duration timeout) {
  return Within<uint64_t>(
      timeout,
      [path]() -> Result<uint64_t> {
        struct statvfs v;
        if (::statvfs(path.c_str(), &v) != 0) return Status::FromErrno("storage", "statvfs " + path, errno);
        return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
      },
      path + " did not answer statvfs within " + FormatDuration(timeout) + " (a hung NFS server?)");
}

std::string_view StorageKindName(StorageKind k) {
  switch (k) {
    case StorageKind::kNone: return "none";
    case StorageKind::kEfs: return "efs";
    case StorageKind::kNfs4: return "nfs4";
    case StorageKind::kBind: return "bind";
  }
  return "unknown";
}
namespace {

constexpr std::string_view kStorage = "storage";
constexpr const char* kNfsOptions = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport";

std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 2])) && std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = line.find(' ', i);
    if (j == std::string_view::npos) j = line.size();
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

std::optional<MountEntry> FindMount(std::string_view mountinfo, const std::string& mount_point) {
  std::optional<MountEntry> found;
  size_t i = 0;
  while (i < mountinfo.size()) {
    size_t nl = mountinfo.find('\n', i);
    if (nl == std::string_view::npos) nl = mountinfo.size();
    std::vector<std::string_view> f = Fields(mountinfo.substr(i, nl - i));
    i = nl + 1;
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    if (f.size() < 10 || Unescape(f[4]) != mount_point) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 2 >= f.size()) continue;
    found = MountEntry{mount_point, Unescape(f[3]), std::string(f[dash + 1]), Unescape(f[dash + 2])};
  }
  return found;
}

Resolver SystemResolver() {
  return [](const std::string& host) -> Result<std::vector<std::string>> {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0) return Status::NotFound(kStorage, host + " does not resolve: " + gai_strerror(rc));
    std::vector<std::string> out;
    for (addrinfo* a = res; a; a = a->ai_next) {
      char buf[64];
      if (::getnameinfo(a->ai_addr, a->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) == 0) out.push_back(buf);
    }
    ::freeaddrinfo(res);
    return out;
  };
}

MountManager::MountManager(Env& env, Resolver resolver, StorageOptions options)
    : env_(env), resolver_(std::move(resolver)), options_(std::move(options)) {}

Result<std::string> MountManager::ResolveSource() {
  if (options_.kind != StorageKind::kEfs) return options_.source;
  if (options_.region.empty()) return Status::InvalidArgument(kStorage, "efs needs the file system's region (storage.region)");
  const std::string host = options_.source + ".efs." + options_.region + ".amazonaws.com";
  // VPC DNS may not answer for the mount target yet at boot: wait for it, within dns_wait.
  BackoffPolicy wait{std::chrono::seconds(1), std::chrono::seconds(10), 2.0, 0, options_.dns_wait};
  Status resolved = Retry(
      env_, wait,
      [&]() -> Status {
        Result<std::vector<std::string>> addrs = resolver_(host);
        if (addrs.ok() && !addrs->empty()) return Status::Ok();
        return Status::Unavailable(kStorage, addrs.ok() ? host + " resolved to nothing" : std::string(addrs.status().message()));
      },
      options_.cancel);
  if (resolved.code() == StatusCode::kCancelled) return resolved;
  if (resolved.ok()) return host + ":/";
  if (!options_.mount_target_ips.empty()) return options_.mount_target_ips.front() + ":/";
  return Status::Unavailable(kStorage, host + " did not resolve after " + FormatDuration(options_.dns_wait) +
                                           "; check the VPC's DNS hostnames and DNS resolution settings, or set "
                                           "storage.mount_target_ips");
}

Status MountManager::Ensure() {
  if (options_.kind == StorageKind::kNone) return Status::Ok();
  if (options_.source.empty()) return Status::InvalidArgument(kStorage, std::string(StorageKindName(options_.kind)) + " storage needs a source");
  ASSIGN_OR_RETURN(effective_source_, ResolveSource());
  const std::string fstype = options_.kind == StorageKind::kBind ? "bind" : "nfs4";

  ASSIGN_OR_RETURN(std::string mountinfo, env_.ReadFile("/proc/self/mountinfo", 16 << 20));
  if (std::optional<MountEntry> m = FindMount(mountinfo, options_.mount_point)) {
    if (IsOurs(*m, mountinfo)) return Status::Ok();
    return Status::FailedPrecondition(kStorage, options_.mount_point + " is already mounted from " + m->source + " (" + m->fstype +
                                                    "); unmount it or choose another storage.mount_point");
  }
  RETURN_IF_ERROR(env_.CreateDirs(options_.mount_point, 0755));
  std::vector<std::string> sources = {effective_source_};
  for (const std::string& ip : options_.mount_target_ips) {
    if (ip + ":/" != effective_source_) sources.push_back(ip + ":/");
  }
  size_t next = 0;
  BackoffPolicy policy{std::chrono::seconds(2), std::chrono::seconds(30), 2.0, 0, options_.mount_budget};
  Status st = Retry(
      env_, policy,
      [&]() -> Status {
        // Rotate through the name and the mount-target addresses.
        const std::string source = options_.kind == StorageKind::kEfs ? sources[next++ % sources.size()] : effective_source_;
        Status mounted = env_.Mount({source, options_.mount_point, fstype, fstype == "bind" ? "" : kNfsOptions, options_.mount_timeout});
        if (mounted.ok()) effective_source_ = source;
        // mount(8) failing or timing out is retried (a mount target may still be coming up); a permission or
        // argument error is not.
        return mounted;
      },
      options_.cancel);
  if (!st.ok()) return st.Annotate("mounting " + effective_source_ + " on " + options_.mount_point);
  return Status::Ok();
}

bool MountManager::IsOurs(const MountEntry& m, std::string_view mountinfo) const {
  if (options_.kind == StorageKind::kBind) {
    // mountinfo names the device; the bound directory is the root field, relative to its own file system:
    // the whole path when the source is on the same mount, its tail when the source sits on another mount,
    // "/" when the source is itself a mount point.
    const std::string& src = options_.source;
    if (m.root == src) return true;
    if (m.root != "/" && src.size() > m.root.size() && src.compare(src.size() - m.root.size(), m.root.size(), m.root) == 0) return true;
    std::optional<MountEntry> under = FindMount(mountinfo, src);
    return m.root == "/" && under && under->source == m.source;
  }
  if (m.fstype.rfind("nfs", 0) != 0) return false;
  // NFS: the server:/export this node mounts, by name or by any mount-target address.
  if (m.source == effective_source_ || m.source == options_.source) return true;
  for (const std::string& ip : options_.mount_target_ips) {
    if (m.source == ip + ":/") return true;
  }
  return options_.kind == StorageKind::kEfs && m.source == options_.source + ".efs." + options_.region + ".amazonaws.com:/";
}

Status MountManager::Probe(Duration timeout) {
  if (options_.kind == StorageKind::kNone) return Status::Ok();
  // Unguessable and created exclusively: others can write to shared storage.
  const std::string path = options_.mount_point + "/.dlagent-probe-" + RandomHex(8);
  Env* env = &env_;
  Result<bool> done = Within<bool>(
      timeout,
      [env, path]() -> Result<bool> {
        ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, env->NewWritableFile(path, 0600));
        RETURN_IF_ERROR(f->Append("dlagent"));
        RETURN_IF_ERROR(f->Sync());
        RETURN_IF_ERROR(f->Close());
        ASSIGN_OR_RETURN(std::string back, env->ReadFile(path, 64));
        if (back != "dlagent") return Status::IoError(kStorage, path + " read back differs from what was written");
        RETURN_IF_ERROR(env->RemoveFile(path));
        return true;
      },
      options_.mount_point + " did not answer a write and read within " + FormatDuration(timeout) + " (a hung NFS server?)");
  return done.ok() ? Status::Ok() : done.status();
}

}  // namespace dlagent
