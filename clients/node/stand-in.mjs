// A client for the Game Backup API's stand-in (`game-backup-api serve --stand-in`) in Node test suites.
// No dependencies: Node 18's fetch and crypto. Each StandIn is a world of its own (a namespace): several
// test files can run at once on the same partner_ids.
import { createHmac, randomUUID } from "node:crypto";

const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

export class StandIn {
  /** url and secret default to BACKUP_API_URL and BACKUP_API_JWT_SECRET; namespace, to a new random one. */
  constructor({ url = process.env.BACKUP_API_URL, secret = process.env.BACKUP_API_JWT_SECRET, namespace } = {}) {
    if (!url || !secret) throw new Error("a stand-in needs its URL and secret (BACKUP_API_URL, BACKUP_API_JWT_SECRET)");
    this.url = url.replace(/\/$/, "");
    this.secret = secret;
    this.namespace = namespace ?? randomUUID();
  }

  /** A bearer token owning partners, in this namespace (HS256, valid 10 minutes). */
  token(partners, { sub, scope, helper = false } = {}) {
    const owned = [].concat(partners);
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: sub ?? owned[0], partners: owned, ns: this.namespace, iat: now, exp: now + 600,
                     jti: randomUUID() };
    if (scope) claims.scope = scope;
    if (helper) claims.stand_in_helper = true; // the test's own reads: not journaled, met by no fault
    const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
    return `${unsigned}.${createHmac("sha256", this.secret).update(unsigned).digest("base64url")}`;
  }

  /** One request as the code under test would send it: { status, headers, body } (body parsed when JSON). */
  async request(method, path, body, { partner = "casino_alpha", token } = {}) {
    const response = await fetch(this.url + path, {
      method,
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token ?? this.token(partner)}` },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
  }

  async #helper(method, path, partner, body) {
    const answer = await this.request(method, path, body, { token: this.token(partner, { helper: true }) });
    if (answer.status !== 200) throw new Error(`${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  /** Queue a fault for partner: 503, 429, 500, "reset-before-commit", "drop-after-commit" or "delay". */
  fault(partner, fault, options = {}) {
    return this.#helper("POST", "/_stand-in/faults", partner, { fault: String(fault), ...options });
  }

  /** The faults queued for partner, in the order they will play. */
  async faults(partner) {
    return (await this.#helper("GET", "/_stand-in/faults", partner)).faults;
  }

  clearFaults(partner) {
    return this.#helper("DELETE", "/_stand-in/faults", partner);
  }

  // Every listing answers an array, the oldest first unless { newestFirst: true }: a count is its length.

  /** The requests made for partner that match filters (method, path, status, outcome, event_type, player_login,
   * event_id, limit), every one kept unless limit says fewer. */
  async requests(partner, { newestFirst = false, ...filters } = {}) {
    const query = new URLSearchParams({ partner_id: partner, limit: "10000", ...filters, ...order(newestFirst) });
    return (await this.#helper("GET", `/_stand-in/requests?${query}`, partner)).requests;
  }

  /** The last refused requests of partner (connection faults included). */
  async rejections(partner, { newestFirst = false } = {}) {
    const query = new URLSearchParams({ partner_id: partner, ...order(newestFirst) });
    return (await this.#helper("GET", `/_stand-in/rejections?${query}`, partner)).rejections;
  }

  /** Every stored event of partner, each page followed. */
  async events(partner, { newestFirst = false } = {}) {
    const found = [];
    let after = null;
    do {
      const query = new URLSearchParams({ partner_id: partner, limit: "1000", ...(after ? { after } : {}) });
      const page = await this.#helper("GET", `/player-events?${query}`, partner);
      found.push(...page.events);
      after = page.next;
    } while (after);
    return newestFirst ? found.reverse() : found;
  }

  /** Forget the events, flags, faults and journal of partners in this namespace. */
  reset(...partners) {
    return this.#helper("POST", "/_stand-in/reset", partners.length ? partners : ["casino_alpha"]);
  }

  /** This namespace is done with (call it when the test file ends): its world may make room at once. */
  done() {
    return this.#helper("POST", "/_stand-in/done", "casino_alpha");
  }
}

const order = (newestFirst) => (newestFirst ? { order: "newest" } : {});
