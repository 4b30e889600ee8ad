#!/bin/bash
# The IMDS emulator as the AWS SDK for JavaScript v3 meets it: @smithy/credential-provider-imds (what
# fromInstanceMetadata and the default credential chain use on EC2: IMDSv2 token PUT, the role list, the
# role's credentials) reads the emulator's credentials, with the endpoint given as users write it (ending in
# "/"), through AWS_EC2_METADATA_SERVICE_ENDPOINT. The SDK comes with the SQS emulator's npm packages.
# Usage: imds_sdk_test.sh IMDS_EMULATOR SOURCE_DIR. Exit 77 (skipped) without node or those packages.
set -euo pipefail
emulator=$1 src=$2
modules=$src/tests/emulators/sqs/node_modules
skip() {
  echo "[  SKIPPED ] imds_sdk: $1"
  exit 77
}
command -v node >/dev/null || skip "no node"
[ -d "$modules/@smithy/credential-provider-imds" ] || skip "no $modules/@smithy/credential-provider-imds (npm ci in tests/emulators/sqs)"

dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/node.json" <<'JSON'
{"instance-id": "i-0123456789abcdef0", "instance-type": "p4d.24xlarge", "local-ipv4": "10.0.0.7",
 "availability-zone": "us-east-1a", "region": "us-east-1", "iam-role": "dlagent-node",
 "credentials": {"AccessKeyId": "ASIAEMULATOR1", "SecretAccessKey": "emulated-secret", "Token": "emulated-token",
                 "expires_in_s": 3600}}
JSON
"$emulator" --metadata "$dir/node.json" --port 0 > "$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/out" && break; sleep 0.05; done
endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out" | head -1)
[ -n "$endpoint" ] || { echo "imds_sdk: the emulator did not start:"; cat "$dir/out"; exit 1; }

cat > "$dir/sdk.js" <<'JS'
const { fromInstanceMetadata } = require("@smithy/credential-provider-imds");
(async () => {
  const creds = await fromInstanceMetadata({ timeout: 2000, maxRetries: 1 })();
  const ok = creds.accessKeyId === "ASIAEMULATOR1" && creds.secretAccessKey === "emulated-secret" &&
             creds.sessionToken === "emulated-token" && creds.expiration instanceof Date && creds.expiration > new Date();
  console.log(`imds_sdk: the SDK read ${creds.accessKeyId}, expiring ${creds.expiration && creds.expiration.toISOString()}: ${ok ? "as served" : "WRONG"}`);
  process.exit(ok ? 0 : 1);
})().catch((e) => { console.log(`imds_sdk: the SDK failed: ${e.name}: ${e.message}`); process.exit(1); });
JS
# The endpoint as users often write it, with a trailing "/".
NODE_PATH=$modules AWS_EC2_METADATA_SERVICE_ENDPOINT="$endpoint/" AWS_EC2_METADATA_DISABLED=false timeout 30 node "$dir/sdk.js"
