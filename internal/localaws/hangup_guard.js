// Preloaded into dynalite and kinesalite (node --require). Both rethrow a
// request's 'error' event (index.js: req.on('error', function (err) { throw err })),
// so a client that closes its connection while a request is being handled, as
// any client does when its context is cancelled, kills the whole server
// (architect/dynalite#183, open). AWS shrugs such a client off; with this guard
// the emulators do too. Any other uncaught error still ends the process.
'use strict'
process.on('uncaughtException', (err) => {
  if (err && err.code === 'ECONNRESET' && err.message === 'aborted') {
    return
  }
  console.error(err)
  process.exit(1)
})
