#!/usr/bin/env node
// A paid API in front of settlegate's POST /v1/verify: every request is
// checked by the gate first, and only a paid one reaches the handler.
//
//   node verify_front.mjs --port P --gate http://127.0.0.1:8402 [--api-key K]
//
// For each request it asks the gate with the request's Authorization header
// as the credential (none: just the resource, for a challenge), its
// Accept-Payment as accept_payment, and "METHOD /path" as the resource. On
// 200 it answers its own 200 JSON with the gate's Payment-Receipt; otherwise
// it hands the client the gate's status, every WWW-Authenticate line in
// order, Vary, Content-Type and body unchanged.
// Prints `listening http://127.0.0.1:P`, then `reached METHOD /path` for
// each request the handler served. Node's standard library only.
import http from 'node:http'
import https from 'node:https'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: { port: { type: 'string' }, gate: { type: 'string' }, 'api-key': { type: 'string' } },
})
const port = Number(values.port)
if (!Number.isInteger(port) || port < 0 || port > 65535 || !values.gate) {
  console.error('usage: verify_front.mjs --port P --gate URL [--api-key K]')
  process.exit(2)
}
const verifyUrl = new URL('/v1/verify', values.gate)
const client = verifyUrl.protocol === 'https:' ? https : http

// POST /v1/verify; resolves with the gate's status, raw header lines and body.
function verify(credential, resource, acceptPayment) {
  const asked = { resource }
  if (credential !== undefined) asked.credential = credential
  if (acceptPayment !== undefined) asked.accept_payment = acceptPayment
  const body = JSON.stringify(asked)
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
  if (values['api-key']) headers.authorization = `Bearer ${values['api-key']}`
  return new Promise((resolve, reject) => {
    const req = client.request(verifyUrl, { method: 'POST', headers, timeout: 15_000 }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, raw: res.rawHeaders, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('the gate did not answer in time')))
    req.on('error', reject)
    req.end(body)
  })
}

// Every value of header `name`, in the order the gate sent them.
const headerValues = (raw, name) => {
  const out = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1])
  return out
}

const server = http.createServer(async (req, res) => {
  req.resume() // this API reads no body
  const resource = `${req.method} ${req.url}`
  try {
    // node joins repeated Accept-Payment lines with ", ", as the list rule allows
    const gate = await verify(req.headers.authorization, resource, req.headers['accept-payment'])
    if (gate.status === 200) {
      const receipt = headerValues(gate.raw, 'payment-receipt')[0]
      if (receipt !== undefined) res.setHeader('Payment-Receipt', receipt)
      res.setHeader('Cache-Control', 'no-store, private')
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ upstream: 'reached', method: req.method, path: req.url }))
      console.log(`reached ${resource}`)
      return
    }
    const challenges = headerValues(gate.raw, 'www-authenticate')
    if (challenges.length > 0) res.setHeader('WWW-Authenticate', challenges)
    const vary = headerValues(gate.raw, 'vary')[0]
    if (vary !== undefined) res.setHeader('Vary', vary)
    const type = headerValues(gate.raw, 'content-type')[0]
    if (type !== undefined) res.setHeader('Content-Type', type)
    const retry = headerValues(gate.raw, 'retry-after')[0]
    if (retry !== undefined) res.setHeader('Retry-After', retry)
    res.writeHead(gate.status)
    res.end(gate.body)
  } catch (e) {
    // No answer from the gate is no proof of payment: nothing served.
    res.writeHead(502, { 'content-type': 'text/plain' })
    res.end(`payment gate unreachable: ${e.message}\n`)
  }
})
server.listen(port, '127.0.0.1', () => console.log(`listening http://127.0.0.1:${server.address().port}`))
