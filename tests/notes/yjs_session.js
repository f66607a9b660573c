// Two real Yjs clients editing through a hub, as notes.js does with the server.
// Usage: node yjs_session.js <path to yjs.min.js>   Prints JSON: the updates in the order the hub
// received them (base64, with their author), every replica's final text, and ("cut") the updates
// of a client that deletes and inserts between the two halves of an emoji, which notes.js never does.
"use strict";
const fs = require("fs");
const vm = require("vm");
const sandbox = { console, TextEncoder, TextDecoder, crypto: require("crypto").webcrypto, Uint8Array };
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8") + "\nthis.Y = Y;", sandbox);
const Y = sandbox.Y;
const b64 = (u) => Buffer.from(u).toString("base64");

let seed = 42;
function rnd(n) { seed = (seed * 16807) % 2147483647; return seed % n; }

const hub = new Y.Doc();
const received = [];             // what the hub got, in order
const clients = {};
const WORDS = ["chest ", "pain ", "心电图 ", "ST↓ ", "😀 ", "BP 150/90 ", "x"];

function makeClient(name) {
  const doc = new Y.Doc();
  const c = { name, doc, online: true, inbox: [] };
  doc.on("update", (update, origin) => {
    if (origin === "hub" || !c.online) return;
    deliver(c, update);
  });
  clients[name] = c;
  return c;
}
function deliver(c, update) {
  received.push({ author: c.name, update: b64(update) });
  Y.applyUpdate(hub, update, c.name);
  for (const other of Object.values(clients)) if (other !== c) other.inbox.push(update);
}
function flush(c) { while (c.inbox.length) Y.applyUpdate(c.doc, c.inbox.shift(), "hub"); }
// Like notes.js: never between the two halves of a surrogate pair.
function boundary(str, i) {
  const c = str.charCodeAt(i);
  return c >= 0xdc00 && c <= 0xdfff ? i + 1 : i;
}
function edit(c) {
  const t = c.doc.getText(rnd(4) === 0 ? "plan" : "history");
  const str = t.toString();
  if (t.length > 3 && rnd(4) === 0) {
    const s = boundary(str, rnd(t.length - 1));
    const e = boundary(str, Math.min(t.length, s + 1 + rnd(3)));
    if (e > s) t.delete(s, e - s);
  } else {
    t.insert(boundary(str, rnd(t.length + 1)), WORDS[rnd(WORDS.length)]);
  }
}

const a = makeClient("a"), b = makeClient("b");
for (let i = 0; i < 400; i++) {          // concurrent: each edits before seeing the other's latest
  edit(i % 2 ? a : b);
  if (rnd(3) === 0) flush(a);
  if (rnd(3) === 0) flush(b);
}
flush(a); flush(b);
a.online = false;                        // a goes offline and keeps typing
for (let i = 0; i < 60; i++) { edit(a); edit(b); }
a.inbox = [];                            // what was broadcast meanwhile never reached it
for (let i = 0; i < 30; i++) edit(a);
// a reconnects: the join exchange (state vectors both ways)
Y.applyUpdate(a.doc, Y.encodeStateAsUpdate(hub, Y.encodeStateVector(a.doc)), "hub");
a.online = true;
deliver(a, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(hub)));
flush(b);
const cutter = new Y.Doc();
const ct = cutter.getText("history");
ct.insert(0, "a😀b");
const cut = [b64(Y.encodeStateAsUpdate(cutter))];
const other = new Y.Doc();
Y.applyUpdate(other, Y.encodeStateAsUpdate(cutter));
const sv = Y.encodeStateVector(cutter);
ct.delete(2, 1);                              // only the second half of the emoji
cut.push(b64(Y.encodeStateAsUpdate(cutter, sv)));
other.getText("history").insert(2, "[");      // between the two halves
cut.push(b64(Y.encodeStateAsUpdate(other, sv)));
const text = (d) => ({ history: d.getText("history").toString(), plan: d.getText("plan").toString() });
process.stdout.write(JSON.stringify({
  received, hub: text(hub), a: text(a.doc), b: text(b.doc),
  hub_state: b64(Y.encodeStateVector(hub)),
  cut, cut_text: ct.toString(),
}));
