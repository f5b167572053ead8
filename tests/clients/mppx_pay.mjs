#!/usr/bin/env node
// Pays for one HTTP request with mppx, the TypeScript MPP client SDK,
// unchanged, in its default pull mode or in push mode:
//
//   node mppx_pay.mjs URL --key 0x... --rpc http://127.0.0.1:8545 [--mode pull|push|sign]
//
// `mppx.fetch` gets the 402, pays the `Payment` challenge (pull: signs the
// transaction and sends it in the credential for the server to broadcast;
// push: broadcasts it itself and sends `{"type": "hash"}`; for an amount of
// "0", signs a `proof` in either mode) and retries. `sign` stops before the
// retry: it prints the `Authorization` value mppx's `createCredential` made
// from the 402 (`{"authorization": ...}`), for a test to present itself.
// Prints one JSON line: the final status, the `Payment-Receipt` as mppx's
// `Receipt.fromResponse` parsed it (or its parse error) and the body. Exits 0
// whenever it got a final answer; the caller judges it. Resolves `mppx` and
// `viem` from MPPX_NODE_MODULES (scripts/mpp-clients installs them in
// .devtools/mppx/node_modules).
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    key: { type: 'string' },
    rpc: { type: 'string' },
    'chain-id': { type: 'string', default: '42431' },
    mode: { type: 'string', default: 'pull' },
    method: { type: 'string', default: 'GET' },
  },
})
const [url] = positionals
if (!url || !values.key || !values.rpc || !['pull', 'push', 'sign'].includes(values.mode)) {
  console.error('usage: mppx_pay.mjs URL --key 0x... --rpc URL [--chain-id N] [--mode pull|push|sign] [--method GET]')
  process.exit(2)
}

const modules = process.env.MPPX_NODE_MODULES ?? path.resolve(import.meta.dirname, '../../.devtools/mppx/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

try {
  const { Mppx, tempo } = await load('mppx/client')
  const { Receipt } = await load('mppx')
  const { createClient, http } = await load('viem')
  const { privateKeyToAccount } = await load('viem/accounts')
  const { tempoModerato } = await load('viem/chains')

  const chainId = Number(values['chain-id'])
  const chain = { ...tempoModerato, id: chainId, rpcUrls: { default: { http: [values.rpc] } } }
  const charge = {
    account: privateKeyToAccount(values.key),
    expectedChainId: chainId,
    getClient: () => createClient({ chain, transport: http(values.rpc) }),
  }
  if (values.mode === 'push') charge.mode = 'push'
  const mppx = Mppx.create({ polyfill: false, methods: [tempo.charge(charge)] })

  if (values.mode === 'sign') {
    const challenged = await fetch(url, { method: values.method })
    const authorization = await mppx.createCredential(challenged)
    console.log(JSON.stringify({ client: 'mppx', mode: 'sign', status: challenged.status, authorization }))
    process.exit(0)
  }
  const res = await mppx.fetch(url, { method: values.method })
  const out = { client: 'mppx', mode: values.mode, status: res.status }
  if (res.headers.get('payment-receipt') !== null) {
    try {
      out.receipt = Receipt.fromResponse(res)
    } catch (e) {
      out.receipt_error = String(e)
    }
  }
  const text = await res.text()
  try {
    out.body = JSON.parse(text)
  } catch {
    out.body = text
  }
  console.log(JSON.stringify(out))
} catch (e) {
  console.log(JSON.stringify({ client: 'mppx', error: String(e?.stack ?? e) }))
  process.exit(1)
}
