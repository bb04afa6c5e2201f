// Benchmark peer: Node's smtp-server 3.21.x (npm), discarding every message.
//
//   node node_server.js --port 2602 --user bench --password bench
//
// Prints "READY <port>" once listening; stops on SIGTERM/SIGINT.
'use strict';

const path = require('path');
const crypto = require('crypto');

// smtp-server is installed by bench/run.sh into bench/build/node.
const modDir = process.env.BENCH_NODE_MODULES ||
    path.join(__dirname, '..', 'build', 'node', 'node_modules');
const { SMTPServer } = require(path.join(modDir, 'smtp-server'));

function arg(name, dflt) {
    const i = process.argv.indexOf('--' + name);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const host = arg('host', '127.0.0.1');
const port = parseInt(arg('port', '0'), 10);
const wantUser = Buffer.from(arg('user', 'bench'));
const wantPass = Buffer.from(arg('password', 'bench'));

function same(a, b) {
    const x = Buffer.from(a || '');
    return x.length === b.length && crypto.timingSafeEqual(x, b);
}

const server = new SMTPServer({
    name: 'node.bench.test',
    banner: 'bench',
    logger: false,
    secure: false,
    authOptional: false,
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: ['STARTTLS'],
    hideSTARTTLS: true,
    disableReverseLookup: true, // no DNS lookups per connection
    size: 1024 * 1024 * 1024,
    maxClients: Infinity,
    onAuth(auth, session, callback) {
        if (same(auth.username, wantUser) && same(auth.password, wantPass)) {
            return callback(null, { user: auth.username });
        }
        return callback(new Error('Invalid username or password'));
    },
    onData(stream, session, callback) {
        stream.on('data', () => {});
        stream.on('end', () => {
            if (stream.sizeExceeded) {
                const err = new Error('Message too big');
                err.responseCode = 552;
                return callback(err);
            }
            return callback(null, 'OK discarded');
        });
    },
});

server.on('error', (err) => {
    console.error('node_server error:', err && err.message);
});

server.listen({ host, port, backlog: 4096 }, () => {
    console.log('READY ' + port);
});

function stop() {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
