#include "bootstrap/common/atomic_file.h"

#include "bootstrap/common/crypto.h"

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
  // A name nobody can guess, created exclusively and never through a link: the directory may be writable by
  // others (shared storage), who must not be able to plant a link at the name and have root write through it.
  const std::string tmp = path + ".tmp." + RandomHex(8);
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
