// Starts the pinned fauxqs on one address, 127.0.0.1 unless told (its own CLI listens on every interface),
// and prints "listening on http://HOST:PORT" once it serves.
// Usage: node serve.mjs [PORT] [HOST]   (PORT 0: any free port)
import { buildApp } from "./node_modules/fauxqs/dist/app.js";
import { SqsStore } from "./node_modules/fauxqs/dist/sqs/sqsStore.js";
import { SnsStore } from "./node_modules/fauxqs/dist/sns/snsStore.js";
import { S3Store } from "./node_modules/fauxqs/dist/s3/s3Store.js";

const port = parseInt(process.argv[2] ?? "0", 10);
const host = process.argv[3] ?? "127.0.0.1";
const app = buildApp({
  logger: false,
  stores: { sqsStore: new SqsStore(), snsStore: new SnsStore(), s3Store: new S3Store() },
});
const address = await app.listen({ port, host });
console.log(`listening on ${address}`);
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => app.close().then(() => process.exit(0)));
