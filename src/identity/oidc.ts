import * as client from 'openid-client';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';

/**
 * The control plane as an OpenID Connect relying party (issue 14 §2): the authorization code
 * flow with PKCE (RFC 6749 §4.1, RFC 7636 with S256, OpenID Connect Core §3.1), through
 * openid-client. The provider is discovered from its issuer URL (OpenID Connect Discovery 1.0);
 * a provider that is down at start is tried again at the next sign-in, so the control plane's
 * fact API does not depend on it.
 *
 * What a sign-in proves comes back as the ID token's claims (signature, issuer, audience, expiry
 * and nonce checked by openid-client); src/identity/claims.ts turns them into a Principal.
 */

export interface OidcSettings {
  issuer: string;
  clientId: string;
  /** Confidential client (client_secret_basic). Without it the client is public: PKCE alone. */
  clientSecret?: string;
  /** The URL people reach the control plane at: redirects go to <publicUrl>/auth/callback and <publicUrl>/signed-out. */
  publicUrl: () => string;
  /** Space-separated scopes; `openid` is always asked for. */
  scopes: string;
  /** Allow an http:// issuer (a provider on this machine, in tests and the demo). */
  allowInsecure: boolean;
}

export interface StartedLogin {
  url: URL;
  state: string;
  nonce: string;
  codeVerifier: string;
}

export class OidcRelyingParty {
  readonly settings: OidcSettings;
  readonly #log: Logger;
  #config: Promise<client.Configuration> | undefined;

  constructor(settings: OidcSettings, logger: Logger) {
    this.settings = settings;
    this.#log = logger.child({ component: 'oidc' });
  }

  /** The provider's configuration, discovered once (again after a failure). */
  configuration(): Promise<client.Configuration> {
    this.#config ??= client
      .discovery(
        new URL(this.settings.issuer),
        this.settings.clientId,
        this.settings.clientSecret === undefined ? { token_endpoint_auth_method: 'none' } : undefined,
        this.settings.clientSecret === undefined ? client.None() : client.ClientSecretBasic(this.settings.clientSecret),
        this.settings.allowInsecure ? { execute: [client.allowInsecureRequests], timeout: 5 } : { timeout: 5 },
      )
      .catch((err: unknown) => {
        this.#config = undefined;
        this.#log.warn({ err: (err as Error).message }, 'oidc: discovery failed; sign-in unavailable until the provider answers');
        throw new OptinError('IDP_UNAVAILABLE', 'the identity provider is not reachable right now; try signing in again shortly', { retryable: true, cause: err });
      });
    return this.#config;
  }

  /** The provider's JWKS URL (for verifying services' access tokens). */
  async jwksUri(): Promise<URL> {
    const meta = (await this.configuration()).serverMetadata();
    if (meta.jwks_uri === undefined) throw new OptinError('IDP_UNAVAILABLE', 'the identity provider publishes no jwks_uri');
    return new URL(meta.jwks_uri);
  }

  /** The issuer as the provider names itself (what tokens carry in `iss`). */
  async issuer(): Promise<string> {
    return (await this.configuration()).serverMetadata().issuer;
  }

  /** Starts a sign-in: the provider's authorization URL and the secrets the callback must present. */
  async start(): Promise<StartedLogin> {
    const config = await this.configuration();
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: new URL('/auth/callback', this.settings.publicUrl()).href,
      scope: ['openid', ...this.settings.scopes.split(/\s+/).filter((s) => s !== '' && s !== 'openid')].join(' '),
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return { url, state, nonce, codeVerifier };
  }

  /**
   * Completes a sign-in from the callback URL: the code is exchanged (with the PKCE verifier),
   * the ID token verified; its claims are returned. Any failure is SIGN_IN_FAILED (the message
   * says what to do, never a token).
   */
  async finish(callbackUrl: URL, expected: { state: string; nonce: string; codeVerifier: string }): Promise<Record<string, unknown>> {
    const config = await this.configuration();
    try {
      const tokens = await client.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: expected.codeVerifier, expectedState: expected.state, expectedNonce: expected.nonce, idTokenExpected: true });
      const claims = tokens.claims();
      if (claims === undefined) throw new Error('no ID token');
      return { ...claims };
    } catch (err) {
      this.#log.info({ err: err instanceof client.AuthorizationResponseError ? err.error : (err as Error).name }, 'oidc: sign-in refused');
      const why = err instanceof client.AuthorizationResponseError ? ` (${err.error})` : '';
      throw new OptinError('SIGN_IN_FAILED', `the sign-in could not be completed${why}; start again`);
    }
  }

  /** RP-initiated logout at the provider (OpenID Connect RP-Initiated Logout 1.0), when it offers it. */
  async endSessionUrl(): Promise<URL | undefined> {
    try {
      const config = await this.configuration();
      if (config.serverMetadata().end_session_endpoint === undefined) return undefined;
      return client.buildEndSessionUrl(config, { client_id: this.settings.clientId, post_logout_redirect_uri: new URL('/signed-out', this.settings.publicUrl()).href });
    } catch {
      return undefined;
    }
  }
}
