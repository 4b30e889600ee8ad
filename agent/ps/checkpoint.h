#pragma once
// Checkpoints of a job's shards (docs/ps.md, "Checkpoints"). Every server writes its slices to <checkpoint
// dir>/<name>/server-<i>-of-<n>.dlps (replaced atomically); once all have, server 0 writes <name>/MANIFEST.json
// with each file's size and SHA-256 (the file's own trailer: the hash of everything before it), last: a
// checkpoint without a manifest is incomplete. A restore checks the manifest, the file's size, that its trailer
// is the manifest's, that its contents hash to it (the one pass of SHA-256 over the data), and parses every
// slice with bounds checks before anything is loaded: a partial or corrupt checkpoint is refused with a message naming the
// file and what is wrong, never loaded.
//
// File: "DLPSCKP1", u32 slices, u32 0, then per slice: u64 key, u32 chunk, u32 optimizer kind, 7 f32 (learning
// rate, momentum, weight decay, beta1, beta2, epsilon, rescale), u64 optimizer steps, u64 length, u64 m length,
// u64 v length, the weights, m and v as f32; then the SHA-256 of everything before it. Little-endian.
//
// Thread safety: functions.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/ps/frame.h"
#include "agent/ps/shard.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

inline constexpr char kManifestName[] = "MANIFEST.json";

// A checkpoint name is one path component: letters, digits, '.', '_', '-'; not "." or "..".
Status CheckCheckpointName(const std::string& name);
std::string ShardFileName(uint32_t index, uint32_t count);

std::string EncodeShardFile(const std::vector<Shard::SliceState>& slices);
// `what` names the file in errors.
Result<std::vector<Shard::SliceState>> DecodeShardFile(std::string_view data, const std::string& what);

std::string EncodeManifest(uint32_t servers, const std::vector<CheckpointFile>& files);
// The entry of server `index` of `count`, after checking that the manifest is
// whole and was written by as many servers.
Result<CheckpointFile> ManifestEntry(std::string_view manifest, const std::string& what, uint32_t index, uint32_t count);

// Writes this server's file under dir/name; returns its entry for the manifest.
Result<CheckpointFile> WriteShardCheckpoint(Shard& shard, const std::string& dir, const std::string& name, uint32_t index, uint32_t count);
Status WriteManifest(const std::string& dir, const std::string& name, uint32_t count, const std::vector<CheckpointFile>& files);
// Checks everything, then loads this server's slices (Shard::Import).
Status RestoreShardCheckpoint(Shard& shard, const std::string& dir, const std::string& name, uint32_t index, uint32_t count);

// agentd keeps each user's checkpoints apart: <root>/users/<uid>, made here if absent (users/ 0755, <uid> 0700,
// both the server's own and not links: refused otherwise, naming who made them). Only root enters it; the
// user's own jobs read and write there through dlps, so no user reads or overwrites another's weights.
Result<std::string> UserCheckpointDir(const std::string& root, uint32_t uid);
// For a checkpoint `name` that uid's jobs do not have: where one of that name is, if anywhere ("" : nowhere),
// as a hint for the error: another user's ("uid 1001 has a checkpoint of that name..."), or one written
// before checkpoints were per user (<root>/<name>).
std::string CheckpointElsewhere(const std::string& root, const std::string& name, uint32_t uid);

}  // namespace dlagent::ps
