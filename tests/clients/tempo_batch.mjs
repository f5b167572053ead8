#!/usr/bin/env node
// Signs a Tempo (0x76) transaction whose calls are given on the command
// line, offline, with viem (cast makes single-call transactions only):
//
//   node tempo_batch.mjs --key 0x... --chain-id 42431 --nonce 3 \
//     TOKEN 'transferWithMemo(address,uint256,bytes32)' TO AMOUNT MEMO + \
//     TOKEN 'approve(address,uint256)' SPENDER AMOUNT
//
// Calls are separated by `+`; each is a target, a function signature and
// its arguments. The fee is paid in AlphaUSD; `--gas` sets the gas limit
// (default 600000; an escrow approve + open needs about 1.8M),
// `--max-fee-per-gas` the fee cap (default 20 gwei; a contract deployment
// raises the base fee above it). Prints the signed bytes as hex.
//
// `--fee-payer` signs a fee-sponsorship hand-off instead, as mppx does: no
// fee token, an expiring nonce, `valid_before` (`--valid-before`, unix
// seconds; default now + 20), serialized as viem's `0x78` envelope with the
// sender's address in the fee-payer slot.
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
    nonce: { type: 'string', default: '0' },
    gas: { type: 'string', default: '600000' },
    'max-fee-per-gas': { type: 'string', default: '20000000000' },
    'fee-payer': { type: 'boolean', default: false },
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
const tx = {
  type: 'tempo',
  chainId: Number(values['chain-id']),
  calls,
  nonce: Number(BigInt(values.nonce)),
  gas: BigInt(values.gas),
  maxFeePerGas: BigInt(values['max-fee-per-gas']),
  maxPriorityFeePerGas: 1n,
  feeToken: '0x20c0000000000000000000000000000000000001',
}
const account = privateKeyToAccount(values.key)
if (values['fee-payer']) {
  delete tx.feeToken
  tx.feePayer = true
  tx.from = account.address
  tx.nonceKey = 2n ** 256n - 1n
  tx.nonce = 0
  tx.validBefore = Number(values['valid-before'] ?? Math.floor(Date.now() / 1000) + 20)
}
console.log(await account.signTransaction(tx, { serializer: tempoModerato.serializers.transaction }))
