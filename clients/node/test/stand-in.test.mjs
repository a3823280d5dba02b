// The client's own tests: `npm test` (node --test), against `game-backup-api serve --stand-in --port 0`
// started here from the PATH, as the CI recipe starts it.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { StandIn } from "../stand-in.mjs";

let server;
let standIn;
const secret = randomBytes(48).toString("base64url");

before(async () => {
  server = spawn("game-backup-api", ["serve", "--stand-in", "--port", "0"], {
    env: { ...process.env, BACKUP_API_JWT_SECRET: secret }, stdio: ["ignore", "pipe", "ignore"],
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the stand-in did not start within 30 s")), 30_000);
    let seen = "";
    server.stdout.on("data", (chunk) => {
      seen += chunk;
      const match = seen.match(/Serving on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    server.on("exit", (code) => reject(new Error(`the stand-in exited (${code})`)));
  });
  standIn = new StandIn({ url, secret });
});

after(async () => {
  await standIn?.done();
  server?.kill("SIGTERM");
});

const bet = (event_id) => ({ partner_id: "casino_alpha", player_login: "p1", event_type: "bet", amount: 5, event_id });

test("events and the journal are the namespace's, and the client's reads are not journaled", async () => {
  await standIn.reset();
  assert.equal((await standIn.request("POST", "/player-events", bet("b1"))).status, 200);
  assert.deepEqual((await standIn.events("casino_alpha")).map((stored) => stored.event), [bet("b1")]);
  assert.equal((await standIn.requests("casino_alpha")).length, 1);
  const other = new StandIn({ url: standIn.url, secret });
  assert.deepEqual(await other.events("casino_alpha"), []); // another world
});

test("a fault by number, and a connection fault as the client saw it", async () => {
  await standIn.reset();
  await standIn.fault("casino_alpha", 503);
  await standIn.fault("casino_alpha", "reset-before-commit");
  assert.equal((await standIn.faults("casino_alpha")).length, 2);
  assert.equal((await standIn.request("POST", "/player-events", bet("b2"))).status, 503);
  await assert.rejects(standIn.request("POST", "/player-events", bet("b2")));
  assert.equal((await standIn.request("POST", "/player-events", bet("b2"))).status, 200);
  const [outage, closed] = await standIn.rejections("casino_alpha");
  assert.deepEqual(await standIn.rejections("casino_alpha", { newestFirst: true }), [closed, outage]);
  assert.equal(closed.status, null);
  assert.equal(closed.outcome, "connection reset");
  assert.equal(outage.status, 503);
  assert.equal((await standIn.requests("casino_alpha", { status: 200 })).length, 1);
});

test("a typo is journaled with the route it meant", async () => {
  await standIn.reset();
  assert.equal((await standIn.request("POST", "/player-event", bet("b3"))).status, 404);
  const [entry] = await standIn.requests("casino_alpha");
  assert.equal(entry.hint, "no route POST /player-event: did you mean POST /player-events?");
});
