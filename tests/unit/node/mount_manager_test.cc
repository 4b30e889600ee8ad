#include "bootstrap/node/mount_manager.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include <atomic>

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

constexpr const char* kMountinfo =
    "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "40 22 0:35 / /mnt/with\\040space rw,relatime shared:20 - tmpfs tmpfs rw\n";

TEST(FindMountTest, ParsesMountinfo) {
  std::string info = std::string(kMountinfo) + "41 22 0:50 / /mnt/efs rw,relatime shared:21 - nfs4 fs-1.efs.us-east-1.amazonaws.com:/ rw,vers=4.1\n";
  auto m = FindMount(info, "/mnt/efs");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->fstype, "nfs4");
  EXPECT_EQ(m->source, "fs-1.efs.us-east-1.amazonaws.com:/");
  EXPECT_EQ(m->root, "/");
  EXPECT_EQ(FindMount(info, "/mnt/with space")->fstype, "tmpfs");
  EXPECT_FALSE(FindMount(info, "/mnt").has_value());
  EXPECT_FALSE(FindMount("garbage\n\n1 2 3\n", "/mnt/efs").has_value());
}

class MountManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.PutFile("/proc/self/mountinfo", kMountinfo);
    env_.SetMountHandler([this](const MountRequest& r) {
      mounts_.push_back(r.source + " " + r.fstype + " " + r.options);
      return mount_result_;
    });
  }
  StorageOptions Efs() {
    StorageOptions o;
    o.kind = StorageKind::kEfs;
    o.source = "fs-0abc";
    o.region = "us-east-1";
    return o;
  }
  FakeEnv env_;
  std::vector<std::string> mounts_;
  Status mount_result_;
  int lookups_ = 0;
};

TEST_F(MountManagerTest, EfsWaitsForDnsThenMountsWithNfsOptions) {
  Resolver dns = [&](const std::string& host) -> Result<std::vector<std::string>> {
    if (++lookups_ < 4) return Status::NotFound("storage", host + " does not resolve");
    return std::vector<std::string>{"10.0.3.7"};
  };
  MountManager m(env_, dns, Efs());
  ASSERT_TRUE(m.Ensure().ok());
  EXPECT_EQ(lookups_, 4);
  ASSERT_EQ(mounts_.size(), 1u);
  EXPECT_EQ(mounts_[0], "fs-0abc.efs.us-east-1.amazonaws.com:/ nfs4 nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport");
}

TEST_F(MountManagerTest, EfsFallsBackToMountTargetIps) {
  Resolver never = [](const std::string& host) -> Result<std::vector<std::string>> { return Status::NotFound("storage", "no"); };
  StorageOptions o = Efs();
  o.dns_wait = seconds(30);
  o.mount_target_ips = {"10.0.3.7"};
  MountManager m(env_, never, o);
  const MonoTime start = env_.NowMono();
  ASSERT_TRUE(m.Ensure().ok());
  EXPECT_LE(env_.NowMono() - start, seconds(31)) << "DNS wait is bounded";
  EXPECT_EQ(m.effective_source(), "10.0.3.7:/");
  StorageOptions no_ips = Efs();
  no_ips.dns_wait = seconds(5);
  Status st = MountManager(env_, never, no_ips).Ensure();
  EXPECT_NE(st.ToString().find("did not resolve"), std::string::npos) << st.ToString();
  EXPECT_NE(st.ToString().find("storage.mount_target_ips"), std::string::npos);
}

TEST_F(MountManagerTest, RetriesWithinTheBudgetThenNamesWhatFailed) {
  mount_result_ = Status::Unavailable("mount", "mount.nfs4: Connection timed out");
  StorageOptions o;
  o.kind = StorageKind::kNfs4;
  o.source = "10.0.0.5:/export";
  o.mount_budget = minutes(2);
  MountManager m(env_, SystemResolver(), o);
  const MonoTime start = env_.NowMono();
  Status st = m.Ensure();
  EXPECT_FALSE(st.ok());
  EXPECT_GT(mounts_.size(), 2u);
  EXPECT_LE(env_.NowMono() - start, minutes(2));
  EXPECT_NE(st.ToString().find("10.0.0.5:/export on /mnt/efs"), std::string::npos) << st.ToString();
}

TEST_F(MountManagerTest, AStoppingAgentEndsTheRetriesAtOnce) {
  std::atomic<bool> stopping{false};
  env_.SetMountHandler([&](const MountRequest&) {
    stopping = mounts_.size() == 1;  // the agent is told to stop during the second attempt
    mounts_.push_back("attempt");
    return Status::Unavailable("mount", "mount.nfs4: Connection timed out");
  });
  StorageOptions o;
  o.kind = StorageKind::kNfs4;
  o.source = "10.0.0.5:/export";
  o.mount_budget = minutes(5);
  o.cancel = &stopping;
  const MonoTime start = env_.NowMono();
  Status st = MountManager(env_, SystemResolver(), o).Ensure();
  EXPECT_EQ(st.code(), StatusCode::kCancelled) << st.ToString();
  EXPECT_EQ(mounts_.size(), 2u);
  EXPECT_LT(env_.NowMono() - start, seconds(5)) << "not the 5 minute budget";
}

TEST_F(MountManagerTest, PermissionErrorsAreNotRetried) {
  mount_result_ = Status::PermissionDenied("mount", "bind /data on /mnt/efs: Operation not permitted");
  StorageOptions o;
  o.kind = StorageKind::kBind;
  o.source = "/data";
  EXPECT_EQ(MountManager(env_, SystemResolver(), o).Ensure().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(mounts_.size(), 1u);
}

TEST_F(MountManagerTest, IdempotentAndRefusesSomethingElseMountedThere) {
  env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + "41 22 0:50 / /mnt/efs rw - nfs4 10.0.0.5:/export rw\n");
  StorageOptions o;
  o.kind = StorageKind::kNfs4;
  o.source = "10.0.0.5:/export";
  EXPECT_TRUE(MountManager(env_, SystemResolver(), o).Ensure().ok());
  EXPECT_TRUE(mounts_.empty()) << "already mounted: nothing to do";
  o.source = "10.0.0.6:/other";
  Status st = MountManager(env_, SystemResolver(), o).Ensure();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.ToString().find("already mounted from 10.0.0.5:/export"), std::string::npos);
}

TEST_F(MountManagerTest, EfsAcceptsItsOwnMountOnlyByNameOrMountTarget) {
  Resolver dns = [](const std::string&) -> Result<std::vector<std::string>> { return std::vector<std::string>{"10.0.3.7"}; };
  StorageOptions o = Efs();
  o.mount_target_ips = {"10.0.3.7"};
  for (const char* ours : {"fs-0abc.efs.us-east-1.amazonaws.com:/", "10.0.3.7:/"}) {
    env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + "41 22 0:50 / /mnt/efs rw - nfs4 " + ours + " rw\n");
    EXPECT_TRUE(MountManager(env_, dns, o).Ensure().ok()) << ours;
  }
  EXPECT_TRUE(mounts_.empty());
  // Another NFS server at the same place is not ours, even though it is NFS too.
  env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + "41 22 0:50 / /mnt/efs rw - nfs4 10.9.9.9:/scratch rw\n");
  Status st = MountManager(env_, dns, o).Ensure();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.ToString().find("already mounted from 10.9.9.9:/scratch"), std::string::npos);
}

TEST_F(MountManagerTest, BindAcceptsOnlyTheSameDirectory) {
  StorageOptions o;
  o.kind = StorageKind::kBind;
  o.source = "/srv/shared";
  // The root field holds the bound directory.
  env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + "63 22 253:1 /srv/shared /mnt/efs rw - ext4 /dev/vda1 rw\n");
  EXPECT_TRUE(MountManager(env_, SystemResolver(), o).Ensure().ok());
  // The same directory, its file system mounted at /srv: the root is the tail of the path.
  env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + "63 22 253:2 /shared /mnt/efs rw - xfs /dev/vdb rw\n");
  EXPECT_TRUE(MountManager(env_, SystemResolver(), o).Ensure().ok());
  // A source that is itself a mount point shows root "/" and the same device.
  env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) +
                                           "50 22 253:2 / /srv/shared rw - xfs /dev/vdb rw\n"
                                           "63 22 253:2 / /mnt/efs rw - xfs /dev/vdb rw\n");
  EXPECT_TRUE(MountManager(env_, SystemResolver(), o).Ensure().ok());
  EXPECT_TRUE(mounts_.empty());
  // A tmpfs, or another directory, at the mount point is not ours.
  for (const char* other : {"63 22 0:60 / /mnt/efs rw - tmpfs tmpfs rw\n", "63 22 253:1 /srv/other /mnt/efs rw - ext4 /dev/vda1 rw\n"}) {
    env_.PutFile("/proc/self/mountinfo", std::string(kMountinfo) + other);
    EXPECT_EQ(MountManager(env_, SystemResolver(), o).Ensure().code(), StatusCode::kFailedPrecondition) << other;
  }
}

TEST_F(MountManagerTest, BadOptionsAreClearErrors) {
  StorageOptions o;
  o.kind = StorageKind::kNfs4;
  EXPECT_EQ(MountManager(env_, SystemResolver(), o).Ensure().code(), StatusCode::kInvalidArgument);
  o = Efs();
  o.region = "";
  EXPECT_NE(MountManager(env_, SystemResolver(), o).Ensure().ToString().find("storage.region"), std::string::npos);
  o.kind = StorageKind::kNone;
  EXPECT_TRUE(MountManager(env_, SystemResolver(), o).Ensure().ok());
}

TEST(MountProbeTest, HealthyMountAnswers) {
  FakeEnv env;
  StorageOptions o;
  o.kind = StorageKind::kBind;
  o.source = "/data";
  EXPECT_TRUE(MountManager(env, SystemResolver(), o).Probe(seconds(2)).ok());
  EXPECT_TRUE(env.ListFiles().empty()) << "probe file removed";
}

TEST(MountProbeTest, HungMountCannotBlockTheCaller) {
  // Outlives the test: the probe thread is still blocked in it when the test returns.
  static FakeEnv* env = new FakeEnv();
  env->SetFaultHook([](std::string_view op, const std::string&) {
    if (op == "sync") std::this_thread::sleep_for(seconds(2));  // a hard NFS mount whose server went away
    return Status();
  });
  StorageOptions o;
  o.kind = StorageKind::kNfs4;
  o.source = "10.0.0.5:/export";
  const auto start = steady_clock::now();
  Status st = MountManager(*env, SystemResolver(), o).Probe(milliseconds(200));
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(steady_clock::now() - start, seconds(1));
  EXPECT_NE(st.ToString().find("hung NFS server"), std::string::npos);
}

// A mount whose server never answers: a FUSE file system mounted with nobody reading /dev/fuse (as root;
// what chaos's storage-hang fault does). statvfs there blocks until the connection is aborted.
TEST(FreeBytesWithinTest, AHungMountIsADeadlineNotAHang) {
  Result<uint64_t> root = FreeBytesWithin("/", seconds(5));
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_GT(*root, 0u);
  Result<uint64_t> missing = FreeBytesWithin("/nonexistent/dlagent", seconds(5));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().ToString().find("/nonexistent/dlagent"), std::string::npos) << missing.status().ToString();

  if (::geteuid() != 0) GTEST_SKIP() << "mounting FUSE needs root";
  const int fuse = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fuse < 0) GTEST_SKIP() << "no /dev/fuse";
  testing::TempDir dir;
  const std::string opts = "fd=" + std::to_string(fuse) + ",rootmode=40000,user_id=0,group_id=0";
  ASSERT_EQ(::mount("dlagent-test-hang", dir.path().c_str(), "fuse.dlagent-test-hang", MS_NOSUID | MS_NODEV, opts.c_str()), 0)
      << std::strerror(errno);
  const auto t0 = steady_clock::now();
  Result<uint64_t> hung = FreeBytesWithin(dir.path(), milliseconds(300));
  const auto took = steady_clock::now() - t0;
  ::close(fuse);  // aborts the connection: the thread left behind returns
  ::umount2(dir.path().c_str(), MNT_DETACH);
  ASSERT_FALSE(hung.ok());
  EXPECT_EQ(hung.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(hung.status().ToString().find(dir.path() + " did not answer statvfs within 300ms"), std::string::npos) << hung.status().ToString();
  EXPECT_LT(took, seconds(2));
}

}  // namespace
}  // namespace dlagent
