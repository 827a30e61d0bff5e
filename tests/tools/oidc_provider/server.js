// A real, certified OpenID Provider (panva's oidc-provider, see package.json for the pinned
// version) for the SSO tests, on loopback only. Started by tests/sso/oidc_provider.py.
//
// Why 8.x and not the newest major (9.x): oidc-provider 9 calls URL.parse and crypto.hash,
// which Node.js 18 lacks, and 18 is what Debian 12's nodejs package is (`make oidc-provider`
// installs it where node is missing). 8.8.1 runs on 18 and on newer Node.js alike. Move to 9
// once the machines' Debian ships Node.js 20.18 or newer (its API differences: pkce.methods
// is gone, PKCE is no longer required by default).
//
//   node server.js <port|0> <config.json> [--exit-on-stdin-close]
//
// Listens on 127.0.0.1:<port> (0: a free port) with issuer http://127.0.0.1:<port>, and prints
// one line `listening <issuer>` on stdout when it answers; everything else goes to stderr.
// Exits on SIGTERM or SIGINT, and with --exit-on-stdin-close also when its stdin closes (the
// test process that started it died). State (sessions, grants, codes, tokens, registered
// clients) is in memory and lost with the process.
//
// config.json:
//   {
//     "clients": [{"client_id": "gw", "client_secret": "...", "redirect_uris": ["http://..."],
//                  "token_endpoint_auth_method": "client_secret_basic" | "client_secret_post"}],
//     "accounts": [{"sub": "alice", "email": "alice@example.com", "name": "Alice",
//                   "groups": ["compliance-managers"]}],
//     "registration_token": "..."   // optional: enables Dynamic Client Registration (RFC 7591)
//   }                               // at /reg, for a bearer of this initial access token
//
// What the provider does:
// - Authorization code flow only (response_type code), PKCE required with S256 only; clients
//   authenticate at the token endpoint with client_secret_basic or client_secret_post.
// - Scopes openid, email (email, email_verified), profile (name, groups) and groups (groups).
//   The scope claims are put in the ID token too (conformIdTokenClaims: false), not only at the
//   userinfo endpoint, so `openid email profile` gives an ID token with email, name and groups.
// - Sign-in page at /interaction/<uid>: a plain HTML form, <input name="login"> taking an
//   account's sub or email (no password) and a "Sign in" button; "Cancel" ends the request with
//   error=access_denied. An unknown login shows the form again with "Unknown account" (400).
//   There is no consent screen: the requested scopes and claims are granted at once.
// - Signing keys: one RSA 2048 key (RS256) generated at start, published at jwks_uri.
//
// Test-only admin endpoint (no authentication: loopback, throwaway):
//   POST /__rotate             generate a new RSA key and sign with it from now on; the earlier
//                              keys stay published in the JWKS (new key first). Answers JSON
//                              {"kid": <new kid>, "kids": [<published kids, current first>]}.
//   POST /__rotate?retire=1    the same, but the earlier keys are dropped from the JWKS (an IdP
//                              that retired its old key: tokens signed with it no longer verify).
// Rotation builds a new Provider instance on the new key set and sends every later request to
// it; sessions, grants, codes, tokens and registered clients are kept (the in-memory adapter's
// storage is shared by instances in one process, and the cookie keys stay the same).

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { promisify } from 'node:util';

import Provider from 'oidc-provider';

const generateKeyPair = promisify(crypto.generateKeyPair);

function usage(message) {
  process.stderr.write(`${message}\nusage: node server.js <port|0> <config.json> [--exit-on-stdin-close]\n`);
  process.exit(2);
}

const [portArg, configPath, ...flags] = process.argv.slice(2);
if (portArg === undefined || configPath === undefined) usage('missing arguments');
const port = Number(portArg);
if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port ${portArg}`);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const accounts = config.accounts ?? [];
const clients = (config.clients ?? []).map((client) => ({
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...client,
}));

const log = (...parts) => process.stderr.write(`${parts.join(' ')}\n`);

function findAccountByLogin(login) {
  const wanted = String(login ?? '').trim();
  return accounts.find((a) => a.sub === wanted)
    ?? accounts.find((a) => a.email && a.email.toLowerCase() === wanted.toLowerCase());
}

let keyNumber = 0;
async function newSigningKey() {
  keyNumber += 1;
  const { privateKey } = await generateKeyPair('rsa', { modulusLength: 2048 });
  const kid = `k${keyNumber}-${crypto.randomBytes(4).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

// Current signing key first: oidc-provider signs with the first key that fits the algorithm.
let signingKeys = [await newSigningKey()];
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

async function loadExistingGrant(ctx) {
  // No consent screen: whatever the client asks for is granted to the signed-in account.
  const { client, session } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  }
  grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
  const claims = [...ctx.oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

function makeProvider(issuer) {
  const registrationToken = config.registration_token;
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    async findAccount(ctx, id) {
      const account = accounts.find((a) => a.sub === id);
      if (!account) return undefined;
      return {
        accountId: account.sub,
        async claims() {
          return {
            sub: account.sub,
            email: account.email,
            email_verified: true,
            name: account.name,
            groups: account.groups ?? [],
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'groups'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    loadExistingGrant,
    features: {
      devInteractions: { enabled: false },
      registration: registrationToken
        ? { enabled: true, initialAccessToken: registrationToken }
        : { enabled: false },
    },
  });
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'registration_create.error', 'jwks.error', 'discovery.error']) {
    provider.on(event, (ctx, error) => log(event, error?.name ?? '', error?.message ?? '',
      error?.error_description ?? ''));
  }
  return provider;
}

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => (
  { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function loginPage(uid, clientId, error) {
  const message = error ? `<p role="alert" id="error">${escapeHtml(error)}</p>` : '';
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - test OpenID Provider</title></head>
<body>
<h1>Sign in</h1>
<p>to continue to <span id="client">${escapeHtml(clientId)}</span></p>
${message}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="login">Username or email</label>
<input id="login" name="login" autocomplete="username" autofocus required>
<button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
<button type="submit">Cancel</button>
</form>
</body>
</html>
`;
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(provider, req, res, path) {
  const [, , uid, action] = path.split('/'); // "", "interaction", uid, action?
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, 'text/plain; charset=utf-8', 'interaction mismatch\n');
    return;
  }
  const clientId = details.params.client_id;
  if (req.method === 'GET' && action === undefined) {
    if (details.prompt.name === 'login') {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId));
    } else {
      // A consent prompt loadExistingGrant did not settle: grant what it says is missing.
      const { missingOIDCScope = [], missingOIDCClaims = [] } = details.prompt.details;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ clientId, accountId: details.session.accountId });
      if (missingOIDCScope.length) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims.length) grant.addOIDCClaims(missingOIDCClaims);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } });
    }
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const account = findAccountByLogin(form.get('login'));
    if (!account) {
      send(res, 400, 'text/html; charset=utf-8', loginPage(uid, clientId, 'Unknown account'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: account.sub } },
      { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
}

let provider;
let handler; // provider.callback(), made once per provider
let issuer;

async function rotate(res, url) {
  const retire = url.searchParams.get('retire') === '1';
  const key = await newSigningKey();
  signingKeys = retire ? [key] : [key, ...signingKeys];
  provider = makeProvider(issuer);
  handler = provider.callback();
  log('rotated signing key to', key.kid, retire ? '(earlier keys retired)' : '');
  send(res, 200, 'application/json', JSON.stringify({
    kid: key.kid, kids: signingKeys.map((k) => k.kid),
  }));
}

async function handle(req, res) {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/__rotate') {
    if (req.method !== 'POST') {
      send(res, 405, 'text/plain; charset=utf-8', 'POST only\n');
      return;
    }
    await rotate(res, url);
    return;
  }
  if (url.pathname.startsWith('/interaction/')) {
    await interaction(provider, req, res, url.pathname);
    return;
  }
  handler(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((error) => {
    log('request failed', req.method, req.url, error?.stack ?? error);
    if (!res.headersSent) {
      send(res, error?.statusCode ?? 500, 'text/plain; charset=utf-8',
        `${error?.error ?? 'server_error'}: ${error?.error_description ?? error?.message}\n`);
    } else {
      res.end();
    }
  });
});

function stop() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (flags.includes('--exit-on-stdin-close')) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = makeProvider(issuer);
  handler = provider.callback();
  process.stdout.write(`listening ${issuer}\n`);
});
