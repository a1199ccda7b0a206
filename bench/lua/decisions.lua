-- POST /decisions with unique ids over thousands of sessions and hundreds of agents.
-- Script args (after `--`): mode (single | array | ndjson), records per request, sessions, agents, ids (random | ordered).
local mode, per_request, sessions, agents, id_style = "single", 1, 5000, 300, "random"
local counter, thread_tag = 0, ""
local threads = {}

local OUTCOMES = { "allow", "allow", "allow", "allow", "warn", "audit_only", "block", "require_approval" }
local ACTIONS = { "read_file", "write_file", "shell", "http_request", "mcp_call" }
local SEVERITIES = { "low", "low", "medium", "high", "critical" }

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or mode
   per_request = tonumber(args[2] or per_request)
   sessions = tonumber(args[3] or sessions)
   agents = tonumber(args[4] or agents)
   id_style = args[5] or id_style
   -- Seeded per thread and per process so that reruns into the same file never repeat an id.
   local seed = os.time() * 1000 + (tid or 0) * 7919 + math.floor((os.clock() * 1e6) % 1000)
   math.randomseed(seed)
   thread_tag = string.format("%04x%04x", math.random(0, 0xffff), math.random(0, 0xffff))
   if mode == "array" then
      wrk.headers["Content-Type"] = "application/json"
   elseif mode == "ndjson" then
      wrk.headers["Content-Type"] = "application/x-ndjson"
   else
      wrk.headers["Content-Type"] = "application/json"
   end
   wrk.method = "POST"
   -- BENCH_TOKEN: a bearer token for a server that requires one (bench/featurecost.py).
   local token = os.getenv("BENCH_TOKEN")
   if token and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
   wrk.path = "/decisions"
end

local function next_id()
   counter = counter + 1
   if id_style == "ordered" then
      -- Time-ordered like a UUIDv7: inserts land at the right edge of the id index.
      return string.format("%012x-%s-%08x", os.time() * 1000, thread_tag, counter)
   end
   -- Random like a UUIDv4: inserts land on any page of the id index.
   return string.format("%04x%04x-%04x-%04x-%04x-%s%08x",
      math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff),
      math.random(0, 0xffff), math.random(0, 0xffff), thread_tag, counter)
end

local function decision()
   local s = math.random(0, sessions - 1)
   local a = s % agents
   local t = os.time()
   local id = next_id()
   return string.format(
      '{"decision":"%s","session_id":"sess-%05d","decision_id":"%s","timestamp":"%s.%06dZ",'
         .. '"agent_id":"agent-%03d","actor":"ai-agent","repository":"acme/repo-%02d","action_type":"%s",'
         .. '"target":"src/module_%04d/handler.py","requested_operation":"edit file and run tests",'
         .. '"policy_pack":"cavra-ai-agent-baseline","rule_id":"runtime.fs.write.%02d","severity":"%s",'
         .. '"reason":"write inside the repository working tree is allowed for this agent role",'
         .. '"evidence_refs":["ev://runs/%s/step-%d"],"correlation_id":"corr-%s","tool_name":"editor",'
         .. '"labels":{"env":"ci","team":"platform"}}',
      OUTCOMES[math.random(#OUTCOMES)], s, id, os.date("!%Y-%m-%dT%H:%M:%S", t), math.random(0, 999999),
      a, a % 40, ACTIONS[math.random(#ACTIONS)], math.random(0, 9999), math.random(0, 99),
      SEVERITIES[math.random(#SEVERITIES)], id, math.random(1, 50), id)
end

function request()
   if mode == "single" then
      return wrk.format(nil, nil, nil, decision())
   end
   local parts = {}
   for i = 1, per_request do
      parts[i] = decision()
   end
   if mode == "array" then
      return wrk.format(nil, nil, nil, "[" .. table.concat(parts, ",") .. "]")
   end
   return wrk.format(nil, nil, nil, table.concat(parts, "\n") .. "\n")
end

-- One JSON line for bench/run.py: wrk's own latency histogram plus error counts.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
         .. '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,'
         .. '"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
      summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean, e.connect, e.read,
      e.write, e.status, e.timeout))
end
