// The session page's evidence piece: a link to the session's bundle, and the records on screen checked
// against its checkpoint in the browser (RFC 8785 canonical JSON, RFC 9162 inclusion proofs, SHA-256).
// The checkpoint's signature is checked offline by `cavra-ingest evidence verify`.
import { authHeaders } from "./api.js";

const enc = new TextEncoder();

// RFC 8785: JSON.stringify already writes strings and numbers as JCS does; keys sort by UTF-16 code units.
function jcs(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${jcs(value[k])}`).join(",")}}`;
}

async function sha256(...parts) {
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// RFC 9162 §2.1.3.2.
async function included(leaf, index, size, path, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256([1], p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256([1], r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(r, root);
}

// Set the bundle link and say how many of the records on screen verify; silent where the store keeps no log.
export async function showEvidence(sessionId, items, link, status) {
  const url = `/sessions/${encodeURIComponent(sessionId)}/evidence`;
  link.href = url;
  status.textContent = "";
  let bundle;
  try {
    const response = await fetch(url, { headers: { Accept: "application/json", ...authHeaders() } });
    if (!response.ok) { link.hidden = true; return; }
    bundle = await response.json();
  } catch { return; }
  link.hidden = false;
  const [, size, rootText] = bundle.checkpoint.split("\n");
  const root = b64(rootText);
  const proofs = new Map(bundle.records.map((r) => [r.record.decision_id, r]));
  let verified = 0, failed = 0;
  for (const item of items) {
    const proof = proofs.get(item.decision_id);
    if (!proof) continue;
    const leaf = await sha256([0], enc.encode(jcs(item)));
    if (await included(leaf, proof.leaf_index, Number(size), proof.inclusion.map(b64), root)) verified += 1;
    else failed += 1;
  }
  const pending = items.length - verified - failed;
  status.textContent = failed
    ? `${failed} record(s) on screen do NOT match checkpoint ${size}`
    : `${verified} record(s) on screen verified against checkpoint ${size}` + (pending ? ` · ${pending} not in it yet` : "");
  status.classList.toggle("evidence-failed", failed > 0);
}
