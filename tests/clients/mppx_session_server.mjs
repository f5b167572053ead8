#!/usr/bin/env node
// An MPP session (v1, escrow contract) server: mppx 0.8.14's
// `tempo.sessionLegacy`, unchanged (the last mppx with a v1 session server),
// the peer the gate's sessions are compared with:
//
//   node mppx_session_server.mjs --port P --rpc R --escrow E --payee-key K --price X
//
// Every request to any path costs X base units of AlphaUSD (6 decimals) from
// the session's vouchers; a paid request gets 200 `{"paid": true}` with the
// `Payment-Receipt`. Prints `listening http://127.0.0.1:P` once it accepts
// connections. Resolves mppx and viem from MPPX_LEGACY_NODE_MODULES (default
// .devtools/mppx-legacy/node_modules, installed by scripts/mpp-clients).
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    rpc: { type: 'string' },
    escrow: { type: 'string' },
    'payee-key': { type: 'string' },
    price: { type: 'string' },
    'chain-id': { type: 'string', default: '42431' },
    currency: { type: 'string', default: '0x20c0000000000000000000000000000000000001' },
  },
})
if (!values.port || !values.rpc || !values.escrow || !values['payee-key'] || !/^[0-9]+$/.test(values.price ?? '')) {
  console.error('usage: mppx_session_server.mjs --port P --rpc URL --escrow 0x... --payee-key 0x... --price BASE_UNITS')
  process.exit(2)
}

const modules =
  process.env.MPPX_LEGACY_NODE_MODULES ?? path.resolve(import.meta.dirname, '../../.devtools/mppx-legacy/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const { Mppx, tempo } = await load('mppx/server')
const { createClient, formatUnits, http } = await load('viem')
const { privateKeyToAccount } = await load('viem/accounts')
const { tempoModerato } = await load('viem/chains')

const chainId = Number(values['chain-id'])
const chain = { ...tempoModerato, id: chainId, rpcUrls: { default: { http: [values.rpc] } } }
const client = createClient({ chain, transport: http(values.rpc) })
const mppx = Mppx.create({
  realm: `127.0.0.1:${values.port}`,
  secretKey: randomBytes(32).toString('hex'),
  methods: [
    tempo.sessionLegacy({
      account: privateKeyToAccount(values['payee-key']),
      currency: values.currency,
      escrowContract: values.escrow,
      getClient: () => client,
    }),
  ],
})
const pay = Mppx.toNodeListener(
  mppx['tempo/sessionLegacy']({ amount: formatUnits(BigInt(values.price), 6), unitType: 'request' }),
)

const server = createServer(async (req, res) => {
  try {
    const result = await pay(req, res)
    if (result.status === 402) return
    if (!res.headersSent) {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ paid: true }))
    }
  } catch (e) {
    console.error(e)
    if (!res.headersSent) res.statusCode = 500
    res.end(String(e?.message ?? e))
  }
})
server.listen(Number(values.port), '127.0.0.1', () => console.log(`listening http://127.0.0.1:${values.port}`))
