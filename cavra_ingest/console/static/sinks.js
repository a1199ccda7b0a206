// The Sinks page: the public /sinks API only, with the console's token (sessionStorage, never a URL).
const KEY = "cavra.token";
const REFRESH_MS = 2000;

function headers(json = false) {
  const secret = sessionStorage.getItem(KEY);
  return { Accept: "application/json", ...(json ? { "Content-Type": "application/json" } : {}),
           ...(secret ? { Authorization: `Bearer ${secret}` } : {}) };
}

function say(text) {
  document.getElementById("sinks-status").textContent = text;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(body !== undefined), cache: "no-store",
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  return { status: response.status, data };
}

function signIn(reason) {
  const form = document.getElementById("sinks-signin");
  document.getElementById("sinks-signin-reason").textContent = reason;
  form.hidden = false;
  document.getElementById("sinks-token").focus();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text; // text only: names, targets and errors never become markup
  if (className) td.className = className;
  row.append(td);
  return td;
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", action);
  return b;
}

function render(items) {
  const body = document.getElementById("sinks-body");
  body.replaceChildren();
  document.getElementById("sinks-empty").hidden = items.length > 0;
  for (const sink of items) {
    const row = document.createElement("tr");
    row.dataset.name = sink.name;
    cell(row, sink.name);
    cell(row, sink.kind);
    cell(row, sink.target);
    cell(row, sink.filter || "(all)");
    cell(row, sink.state, `state state-${sink.state}`);
    cell(row, String(sink.delivered));
    cell(row, `${sink.lag_records} (${sink.lag_seconds} s)`, "lag");
    cell(row, sink.last_error || "", "last-error");
    cell(row, String(sink.dead_letters), "dead");
    const actions = cell(row, "");
    const next = sink.state === "active" ? "paused" : "active";
    actions.append(button(sink.state === "active" ? "Pause" : "Resume", () => change(sink.name, next)));
    if (sink.dead_letters > 0) actions.append(button("Replay", () => replay(sink.name)));
    body.append(row);
  }
}

async function load() {
  let answer;
  try {
    answer = await call("GET", "/sinks");
  } catch {
    say("The API did not answer. Is the server running?");
    return;
  }
  if (answer.status === 401 || answer.status === 403) {
    signIn((answer.data && answer.data.detail) || "Sign in with an admin token.");
    return;
  }
  if (answer.status !== 200) {
    say((answer.data && answer.data.detail) || `The API answered ${answer.status}.`);
    return;
  }
  document.getElementById("sinks-signin").hidden = true;
  render(answer.data.items);
}

async function change(name, state) {
  const answer = await call("PATCH", `/sinks/${encodeURIComponent(name)}`, { state });
  say(answer.status === 200 ? `${name} is ${state}.` : (answer.data && answer.data.detail) || "Not changed.");
  await load();
}

async function replay(name) {
  const answer = await call("POST", `/sinks/${encodeURIComponent(name)}/replay`);
  say(answer.status === 200
    ? `${name}: ${answer.data.replayed} replayed, ${answer.data.dead_letters} still dead.`
    : (answer.data && answer.data.detail) || "Not replayed.");
  await load();
}

document.getElementById("sinks-signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("sinks-token");
  sessionStorage.setItem(KEY, input.value.trim());
  input.value = "";
  load();
});
load();
setInterval(load, REFRESH_MS);
