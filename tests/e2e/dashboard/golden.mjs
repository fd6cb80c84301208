// node golden.mjs DECODE_MJS DIR: the dashboard's decoders (ctl/http/dashboard/src/decode.js,
// bundled by the build into DECODE_MJS) read the golden messages the C encoders wrote into
// DIR (tests/unit/proto/golden_write): each good one decodes to exactly what index.json
// expects, each malformed one is rejected with its reason. Prints "N passed, M failed".
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { deepStrictEqual } from "node:assert";

const [decodeMjs, dir] = process.argv.slice(2);
const { classify } = await import(pathToFileURL(decodeMjs).href);
const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
let passed = 0,
  failed = 0;
function check(name, ok, why) {
  if (ok) passed++;
  else {
    failed++;
    console.log(`FAIL ${name}: ${why}`);
  }
}
for (const g of index) {
  const bytes = new Uint8Array(readFileSync(join(dir, `${g.name}.mpk`)));
  const t = classify(g.topic);
  if (!t) {
    check(g.name, false, `no decoder for topic ${g.topic}`);
    continue;
  }
  let got, err;
  try {
    got = t.decode(bytes);
  } catch (e) {
    err = e;
  }
  if ("expect" in g) {
    if (err) check(g.name, false, `rejected: ${err.message}`);
    else {
      try {
        deepStrictEqual(got, g.expect);
        check(g.name, true);
      } catch (e) {
        check(g.name, false, `decoded to ${JSON.stringify(got)}, expected ${JSON.stringify(g.expect)}`);
      }
    }
  } else {
    check(
      g.name,
      err && err.message && err.message.includes(g.reason),
      err ? `reason "${err.message}" lacks "${g.reason}"` : `accepted as ${JSON.stringify(got)}`,
    );
  }
}
// Every prefix of every good message is rejected, never half-read.
for (const g of index.filter((x) => "expect" in x && x.expect !== null)) {
  const bytes = new Uint8Array(readFileSync(join(dir, `${g.name}.mpk`)));
  let bad = 0;
  for (let n = 1; n < bytes.length; n++) {
    try {
      classify(g.topic).decode(bytes.subarray(0, n));
      bad++;
    } catch {
      /* rejected, as it must be */
    }
  }
  check(`${g.name} prefixes`, bad === 0, `${bad} of ${bytes.length - 1} prefixes accepted`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
