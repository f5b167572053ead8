#!/usr/bin/env node
// Checks a paid API's discovery with mppx 0.11.0's own validators, unchanged:
//
//   node mppx_discover.mjs --doc URL    the OpenAPI document at URL, with
//                                       `validate` from 'mppx/discovery'
//   node mppx_discover.mjs --site URL   the API at URL end to end, with the
//                                       checks of 'mppx/validation' (its
//                                       /llms.txt, its /openapi.json, then
//                                       each paid endpoint's 402 and
//                                       malformed-credential answer), no
//                                       payment made
//
// 'mppx/validation' itself does not load here: its payment phase imports
// the CLI's account module, whose `incur` dependency the published package
// does not install. --site therefore runs the same functions it runs
// (dist/cli/validate/{discovery,challenge}.js, unchanged) in the same order,
// without the payment phase.
//
// Prints one JSON line: for --doc the answer's status and content type, the
// validator's issues and the document; for --site the validator's result.
// Exits 0 whenever it got that far; the caller judges. Resolves mppx from
// MPPX_NODE_MODULES (scripts/mpp-clients installs it in .devtools/mppx).
import { createRequire } from 'node:module'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const { values } = parseArgs({ options: { doc: { type: 'string' }, site: { type: 'string' } } })
if (!values.doc === !values.site) {
  console.error('usage: mppx_discover.mjs --doc URL | --site URL')
  process.exit(2)
}
const modules = process.env.MPPX_NODE_MODULES ?? path.resolve(import.meta.dirname, '../../.devtools/mppx/node_modules')
const require = createRequire(path.join(modules, 'noop.js'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

try {
  if (values.doc) {
    const { validate } = await load('mppx/discovery')
    const res = await fetch(values.doc, { signal: AbortSignal.timeout(15_000) })
    const text = await res.text()
    const document = JSON.parse(text)
    const issues = validate(document)
    console.log(JSON.stringify({ status: res.status, contentType: res.headers.get('content-type'), issues, document }))
  } else {
    const dist = path.dirname(path.dirname(require.resolve('mppx/discovery')))
    const internal = (file) => import(pathToFileURL(path.join(dist, 'cli/validate', file)).href)
    const { validate } = await load('mppx/discovery')
    const { fetchDiscoveryDoc, validateLlmsDoc, extractEndpointsFromDiscovery } = await internal('discovery.js')
    const { validateChallenge, validateErrorHandling } = await internal('challenge.js')
    const base = values.site.replace(/\/$/, '')
    const llms = await validateLlmsDoc(base)
    const found = await fetchDiscoveryDoc(base)
    if ('error' in found) throw new Error(`no discovery document: ${found.error}`)
    const issues = validate(found.doc)
    const endpoints = []
    for (const endpoint of extractEndpointsFromDiscovery(found.doc)) {
      const { results: challenge } = await validateChallenge(base, endpoint, false, { discoveryDoc: found.doc })
      const errorHandling = await validateErrorHandling(base, endpoint, {})
      endpoints.push({ method: endpoint.method, path: endpoint.path, challenge, errorHandling })
    }
    console.log(JSON.stringify({ llms, issues, endpoints }))
  }
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }))
  process.exit(1)
}
