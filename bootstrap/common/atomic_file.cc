#include "bootstrap/common/atomic_file.h"

#include <atomic>
#include <unistd.h>

namespace dlagent {
namespace {

Status WriteAndSync(Env& env, const std::string& tmp, std::string_view contents, uint32_t mode) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env.NewWritableFile(tmp, mode));
  Status st = file->Append(contents);
  if (st.ok()) st = file->Sync();
  Status closed = file->Close();
  return st.ok() ? closed : st;
}

}  // namespace

Status WriteFileAtomically(Env& env, const std::string& path, std::string_view contents, uint32_t mode) {
  // Unique per process and call, so that concurrent writers never share a temporary file.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  Status st = WriteAndSync(env, tmp, contents, mode);
  if (st.ok()) st = env.RenameFile(tmp, path);
  if (!st.ok()) {
    (void)env.RemoveFile(tmp);  // best effort: it may never have been created
    return st.Annotate("writing " + path);
  }
  // The rename is done; without the directory fsync it may not survive a power loss.
  return env.SyncDir(DirName(path)).Annotate("writing " + path);
}

}  // namespace dlagent
