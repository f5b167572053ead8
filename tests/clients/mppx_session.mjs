#!/usr/bin/env node
// Pays for HTTP requests through one MPP session (v1, escrow contract) with
// mppx's `tempo.sessionLegacy` client, unchanged:
//
//   node mppx_session.mjs URL --key K --rpc R [--requests N] [--deposit D]
//     [--method GET|POST] [--close] [--escrow E] [--chain-id C]
//
// The first request opens a channel of D base units (default 10000000) with
// a signed approve + open transaction in the credential; each next one pays
// with a voucher. `--close` then closes the session cooperatively. Only the
// viem transport differs from a stock client: it multiplies the gas the node
// fills or estimates by 4, since anvil under-fills the approve + open batch
// (about 534k filled, 1.81M used). Prints one JSON line:
// `{statuses, receipts (each Payment-Receipt decoded), channelId, close?,
// error?}`; exits 0 whenever it printed the line with no error. Resolves
// mppx and viem from MPPX_NODE_MODULES (default .devtools/mppx/node_modules).
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    key: { type: 'string' },
    rpc: { type: 'string' },
    requests: { type: 'string', default: '1' },
    deposit: { type: 'string', default: '10000000' },
    method: { type: 'string', default: 'GET' },
    close: { type: 'boolean', default: false },
    escrow: { type: 'string' },
    'chain-id': { type: 'string', default: '42431' },
  },
})
const [url] = positionals
const requests = Number(values.requests)
if (
  !url ||
  !values.key ||
  !values.rpc ||
  !Number.isSafeInteger(requests) ||
  requests < 0 ||
  !/^[0-9]+$/.test(values.deposit) ||
  !['GET', 'POST'].includes(values.method)
) {
  console.error(
    'usage: mppx_session.mjs URL --key 0x... --rpc URL [--requests N] [--deposit D] [--method GET|POST] [--close] [--escrow 0x...] [--chain-id C]',
  )
  process.exit(2)
}

const modules = process.env.MPPX_NODE_MODULES ?? path.resolve(import.meta.dirname, '../../.devtools/mppx/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

// A Payment-Receipt header: base64url JSON.
const decode = (header) => JSON.parse(Buffer.from(header, 'base64url').toString('utf8'))

const out = { statuses: [], receipts: [] }
try {
  const { tempo } = await load('mppx/client')
  const { createClient, formatUnits, http, toHex } = await load('viem')
  const { privateKeyToAccount } = await load('viem/accounts')
  const { tempoModerato } = await load('viem/chains')

  const times4 = (gas) => toHex(BigInt(gas) * 4n)
  const padded = (rpc) => (options) => {
    const inner = http(rpc)(options)
    return {
      ...inner,
      async request(args, opts) {
        const result = await inner.request(args, opts)
        if (args.method === 'eth_estimateGas') return times4(result)
        if (args.method === 'eth_fillTransaction' && result?.tx?.gas) {
          return { ...result, tx: { ...result.tx, gas: times4(result.tx.gas) } }
        }
        return result
      },
    }
  }

  const chainId = Number(values['chain-id'])
  const chain = { ...tempoModerato, id: chainId, rpcUrls: { default: { http: [values.rpc] } } }
  const client = createClient({ chain, transport: padded(values.rpc) })
  const session = tempo.sessionLegacy({
    account: privateKeyToAccount(values.key),
    client,
    maxDeposit: formatUnits(BigInt(values.deposit), 6),
    ...(values.escrow ? { escrowContract: values.escrow } : {}),
  })
  for (let i = 0; i < requests; i++) {
    const res = await session.fetch(url, { method: values.method })
    out.statuses.push(res.status)
    const header = res.headers.get('payment-receipt')
    out.receipts.push(header === null ? null : decode(header))
    await res.text()
  }
  out.channelId = session.channelId ?? null
  if (values.close) out.close = (await session.close()) ?? null
  console.log(JSON.stringify(out))
} catch (e) {
  out.error = String(e?.stack ?? e)
  console.log(JSON.stringify(out))
  process.exit(1)
}
