// A real OpenID Connect provider for dfs's tests: panva/oidc-provider (OpenID certified) on
// 127.0.0.1, signing ID tokens with a fresh RSA key. It prints its issuer URL on the first line
// of stdout once it listens.
//
// The person at the browser is simulated by the provider itself: its login and consent pages
// finish at once for the account DFS_OIDC_ACCOUNT (a test has no person to type a password).
// Everything else (authorization code, PKCE, nonce, token signing, discovery, JWKS) is the
// provider's own code.
//
// Modes that make the provider lie, for the tests that dfs refuses what it should:
// - DFS_OIDC_SKEW_SECONDS=N: the provider's clock runs N seconds behind while it answers the
//   token endpoint, so the ID tokens it signs expired before they were handed out (its login
//   pages and cookies keep the right time).
// - DFS_OIDC_FORGE=1: the key set published at the JWKS endpoint is not the one that signs the
//   tokens (same key id), as when someone else mints tokens in the issuer's name.
import { generateKeyPairSync, randomUUID } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.env.DFS_OIDC_PORT ?? 0);
const clientId = process.env.DFS_OIDC_CLIENT_ID ?? "dfs";
const account = process.env.DFS_OIDC_ACCOUNT ?? "alice";
const skew = Number(process.env.DFS_OIDC_SKEW_SECONDS ?? 0);
const forge = process.env.DFS_OIDC_FORGE === "1";

let skewing = false;
if (skew > 0) {
  const now = Date.now;
  Date.now = () => now() - (skewing ? skew * 1000 : 0);
}

function rsaJwk(kid) {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" };
}

const kid = randomUUID();
const signing = rsaJwk(kid);
const published = forge ? rsaJwk(kid) : signing;
const publicPart = ({ d, p, q, dp, dq, qi, ...pub }) => pub;

// Bind first, so the issuer names the real port.
import { createServer } from "node:http";
const server = createServer();
await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      application_type: "native",
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1/callback"],
    },
  ],
  jwks: { keys: [signing] },
  claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: `Test user ${sub}`, preferred_username: sub };
      },
    };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  // Profile claims in the ID token itself, as most providers put them.
  conformIdTokenClaims: false,
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.proxy = false;

// The simulated person: logs in as `account` and consents to what the client asked.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!match || ctx.method !== "GET") return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === "login") {
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: account } }, {
      mergeWithLastSubmission: false,
    });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  const grantId = await grant.save();
  return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, {
    mergeWithLastSubmission: true,
  });
});

// The late clock, at the token endpoint only.
provider.use(async (ctx, next) => {
  if (skew <= 0 || ctx.path !== "/token") return next();
  skewing = true;
  try {
    await next();
  } finally {
    skewing = false;
  }
});

// The forger's key set, in place of the provider's own.
provider.use(async (ctx, next) => {
  if (forge && ctx.method === "GET" && ctx.path === "/jwks") {
    ctx.type = "application/jwk-set+json";
    ctx.body = JSON.stringify({ keys: [publicPart(published)] });
    return;
  }
  return next();
});

server.on("request", provider.callback());
console.log(issuer);
