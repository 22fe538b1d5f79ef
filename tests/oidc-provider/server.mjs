// The OIDC provider Portcullis's end-to-end tests log in against: the
// `oidc-provider` package with its built-in login form (devInteractions) and
// one registered client.
//
// Usage: node server.mjs [port]   (0 or absent: an ephemeral port)
// Configuration comes from the environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET     the client (default: portcullis / portcullis-test-secret)
//   OIDC_REDIRECT_URIS                     comma-separated, required
//   OIDC_POST_LOGOUT_REDIRECT_URIS         comma-separated, optional
//   OIDC_ACCESS_TOKEN_TTL                  seconds (default 60), short so refresh can be tested
//   OIDC_PORT                              used when no port argument is given
//
// Once listening it prints one JSON line on stdout, {"issuer": "http://127.0.0.1:<port>"},
// which the test harness reads. Every account exists (any login and password are
// accepted) and has the role "editor".
import http from 'node:http';

import Provider from 'oidc-provider';

const list = (value) => (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);

const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
const clientId = process.env.OIDC_CLIENT_ID ?? 'portcullis';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'portcullis-test-secret';
const redirectUris = list(process.env.OIDC_REDIRECT_URIS);
const postLogoutRedirectUris = list(process.env.OIDC_POST_LOGOUT_REDIRECT_URIS);
const accessTokenTtl = Number(process.env.OIDC_ACCESS_TOKEN_TTL ?? 60);

if (redirectUris.length === 0) {
  console.error('OIDC_REDIRECT_URIS is required');
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Test-only cookie keys: this provider never runs outside the tests.
  cookies: { keys: ['portcullis-test-cookie-key'] },
  claims: {
    openid: ['sub', 'roles'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put scope claims (roles) into the ID token, not only into userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  // Refresh tokens without offline_access, for the test client.
  issueRefreshToken: async (_ctx, client) => client.clientId === clientId && client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: accessTokenTtl },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    async claims() {
      return { sub: id, name: `User ${id}`, email: `${id}@example.test`, email_verified: true, roles: ['editor'] };
    },
  }),
});

server.on('request', provider.callback());
console.log(JSON.stringify({ issuer }));

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
