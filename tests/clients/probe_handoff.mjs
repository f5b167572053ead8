#!/usr/bin/env node
// Signs a fee-sponsorship hand-off (viem's 0x78 envelope, as mppx sends it)
// whose nonce fields an attacker chooses, offline, with viem:
//
//   node probe_handoff.mjs --key 0x... [--nonce-key N] [--nonce N] \
//     [--valid-before SECS] [--gas N] [--max-fee-per-gas N] \
//     TOKEN 'transferWithMemo(address,uint256,bytes32)' TO AMOUNT MEMO [+ ...]
//
// Defaults are mppx's: an expiring nonce (nonce key 2^256 - 1, nonce 0) and
// valid_before now + 20. Calls are separated by `+`. Prints the signed hex.
// Resolves `viem` from MPPX_NODE_MODULES (default .devtools/mppx/node_modules).
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    key: { type: 'string' },
    'chain-id': { type: 'string', default: '42431' },
    'nonce-key': { type: 'string' },
    nonce: { type: 'string', default: '0' },
    gas: { type: 'string', default: '800000' },
    'max-fee-per-gas': { type: 'string', default: '20000000000' },
    'valid-before': { type: 'string' },
  },
})
const modules = process.env.MPPX_NODE_MODULES ?? path.resolve(import.meta.dirname, '../../.devtools/mppx/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const { encodeFunctionData, parseAbiItem } = await load('viem')
const { privateKeyToAccount } = await load('viem/accounts')
const { tempoModerato } = await load('viem/chains')

const groups = [[]]
for (const p of positionals) p === '+' ? groups.push([]) : groups.at(-1).push(p)
const calls = groups.map(([to, signature, ...args]) => {
  const item = parseAbiItem(`function ${signature}`)
  const typed = args.map((a, i) => (item.inputs[i].type.startsWith('uint') ? BigInt(a) : a))
  return { to, data: encodeFunctionData({ abi: [item], functionName: item.name, args: typed }) }
})
const account = privateKeyToAccount(values.key)
const tx = {
  type: 'tempo',
  chainId: Number(values['chain-id']),
  calls,
  gas: BigInt(values.gas),
  maxFeePerGas: BigInt(values['max-fee-per-gas']),
  maxPriorityFeePerGas: 1n,
  feePayer: true,
  from: account.address,
  nonceKey: values['nonce-key'] === undefined ? 2n ** 256n - 1n : BigInt(values['nonce-key']),
  nonce: Number(BigInt(values.nonce)),
  validBefore: Number(values['valid-before'] ?? Math.floor(Date.now() / 1000) + 20),
}
console.log(await account.signTransaction(tx, { serializer: tempoModerato.serializers.transaction }))
