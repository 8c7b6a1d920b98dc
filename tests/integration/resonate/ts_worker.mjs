// A process of Resonate's official TypeScript SDK (@resonatehq/sdk 0.11.5) against a dawait
// node: run by tests/integration/resonate/test_typescript_sdk.py with node and the SDK that
// scripts/check.sh installs in .tools/resonate-ts (NODE_PATH points there).
//
//   node ts_worker.mjs worker URL GROUP EFFECTS     serve GROUP's functions until killed
//   node ts_worker.mjs rpc URL GROUP ID FUNC ARGS   run FUNC(...ARGS) on a worker of GROUP,
//                                                   print its outcome as one JSON line
//   node ts_worker.mjs many URL GROUP PREFIX N      N runs of steps(2) at once
//
// Every step appends "NAME ID PID" to EFFECTS when it runs.
import { appendFileSync } from "node:fs";
import { createRequire } from "node:module";

if (!Promise.withResolvers) {
  // node 20 has no Promise.withResolvers (node 22 does); the SDK needs it.
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const require = createRequire(process.env.NODE_PATH + "/");
const { Resonate, Constant } = await import(require.resolve("@resonatehq/sdk"));

const [mode, url, group] = process.argv.slice(2);
const token = process.env.RESONATE_TOKEN;
let effects = "";

function effect(name, id) {
  appendFileSync(effects, `${name} ${id} ${process.pid}\n`);
}

function* double(ctx, i) {
  effect("double", ctx.id);
  return i * 2;
}

function* steps(ctx, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(yield* ctx.run(double, i));
  return out;
}

function* sleeper(ctx, ms) {
  yield* ctx.sleep(ms);
  return "slept";
}

function* calls(ctx, target, x) {
  return yield* ctx.rpc("triple", x, ctx.options({ target: `poll://any@${target}` }));
}

function* triple(ctx, x) {
  effect("triple", ctx.id);
  return x * 3;
}

async function slow(ctx, ms) {
  effect("slow", ctx.id);
  await new Promise((resolve) => setTimeout(resolve, ms));
  effect("slow-done", ctx.id);
  return ms;
}

function* survives(ctx, ms) {
  const first = yield* ctx.run(double, 1);
  const middle = yield* ctx.run(slow, ms);
  return [first, middle, yield* ctx.run(double, 2)];
}

function* approval(ctx, who) {
  const promise = yield* ctx.promise();
  effect("waiting", promise.id);
  return { who, decision: yield* promise };
}

function alwaysFails(ctx, tries) {
  effect("fails", ctx.id);
  throw new Error(`failed (of ${tries})`);
}

function* retriesThenFails(ctx, tries) {
  const retryPolicy = new Constant({ delay: 50, maxRetries: tries });
  return yield* ctx.run(alwaysFails, tries, ctx.options({ retryPolicy }));
}

const functions = {
  double, steps, sleeper, calls, triple, slow, survives, approval, retriesThenFails,
};

if (mode === "worker") {
  effects = process.argv[5];
  const resonate = new Resonate({ url, group, token, ttl: 2000 });
  for (const [name, fn] of Object.entries(functions)) resonate.register(name, fn);
  console.log("ready");
} else if (mode === "rpc") {
  const [id, func, args] = process.argv.slice(5);
  const resonate = new Resonate({ url, group: `${group}-client`, token });
  try {
    const value = await resonate.rpc(id, func, ...JSON.parse(args),
      resonate.options({ target: `poll://any@${group}` }));
    console.log(JSON.stringify({ resolved: value }));
  } catch (error) {
    console.log(JSON.stringify({ rejected: error?.name ?? String(error), message: error?.message }));
  }
  process.exit(0);
} else if (mode === "many") {
  const [prefix, count] = process.argv.slice(5);
  const resonate = new Resonate({ url, group: `${group}-client`, token });
  const runs = [];
  for (let i = 0; i < Number(count); i++) {
    runs.push(resonate.rpc(`${prefix}${i}`, "steps", 2, resonate.options({ target: `poll://any@${group}` })));
  }
  const values = await Promise.all(runs);
  console.log(JSON.stringify({ right: values.filter((v) => JSON.stringify(v) === "[0,2]").length }));
  process.exit(0);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
