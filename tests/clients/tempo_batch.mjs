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
console.log(await account.signTransaction(tx, { serializer: tempoModerato.serializers.transaction }))
