// A real OpenID Connect provider (node oidc-provider) on loopback for cavra-ingest's sign-in tests.
// Usage: node provider.mjs PORT CLIENT_JSON USERS_FILE [OPTIONS_JSON]
//   CLIENT_JSON: an oidc-provider client (client_id, redirect_uris, backchannel_logout_uri, ...) or a list of them.
//   USERS_FILE: {"alice": {"email": "...", "groups": ["..."]}}, re-read at every look-up so tests can change groups.
//   OPTIONS_JSON: {"id_token_ttl": seconds}. A fresh RS256 key (new kid) is made at every start: restart to rotate.
// Sign-in uses the provider's own login form (any password); consent is granted without a second form.
import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const [port, clientJson, usersFile, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || '{}');
const clients = [].concat(JSON.parse(clientJson));
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };

function users() {
  return JSON.parse(fs.readFileSync(usersFile, 'utf8'));
}

const provider = new Provider(issuer, {
  clients: clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
    ...client,
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'groups', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'], profile: ['name'] },
  // The groups claim goes into the ID token itself: the relying party maps roles from it.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: { IdToken: options.id_token_ttl ?? 3600, AccessToken: 600, AuthorizationCode: 60, Session: 3600, Grant: 3600 },
  async findAccount(ctx, sub) {
    const user = users()[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: user.email, email_verified: true, name: user.name ?? sub, groups: user.groups ?? [] };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email groups profile');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: true, issuer, kid: jwk.kid }) + '\n');
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
