#include "agent/jobs/rank_env.h"

#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace dlagent::jobs {

std::string EnvValue(const std::vector<std::string>& env, const std::string& name) {
  std::string value;
  for (const std::string& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') value = e.substr(name.size() + 1);
  }
  return value;
}

std::vector<std::string> RankEnv(std::vector<std::string> base, const v1::JobSpec& spec, const v1::RankSpec& rank, const std::string& home) {
  auto set = [&](const std::string& kv) {
    const std::string name = kv.substr(0, kv.find('=') + 1);
    std::erase_if(base, [&](const std::string& e) { return e.compare(0, name.size(), name) == 0; });
    base.push_back(kv);
  };
  set("USER=" + spec.user());
  set("LOGNAME=" + spec.user());
  set("HOME=" + home);
  if (EnvValue(base, "PATH").empty()) set("PATH=/usr/local/bin:/usr/bin:/bin");
  for (const std::string& kv : rank.env()) set(kv);
  for (const std::string& kv : spec.env()) set(kv);
  return base;
}

std::string HomeOf(uid_t uid) {
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found && found->pw_dir) return found->pw_dir;
  return "/";
}

std::string Workdir(const v1::JobSpec& spec) {
  if (!spec.workdir().empty()) return spec.workdir();
  const std::string home = HomeOf(spec.uid());
  struct stat st;
  return ::stat(home.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? home : "/";
}

std::vector<std::string> ProgramCandidates(const std::string& program, const std::vector<std::string>& env) {
  if (program.find('/') != std::string::npos) return {program};
  std::string path = EnvValue(env, "PATH");
  if (path.empty()) path = "/usr/local/bin:/usr/bin:/bin";
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + program);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

bool ProgramFound(const std::string& program, const std::vector<std::string>& env, const std::string& workdir) {
  for (const std::string& f : ProgramCandidates(program, env)) {
    if (::access((f[0] == '/' ? f : workdir + "/" + f).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string SignalName(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace dlagent::jobs
