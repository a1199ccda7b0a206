-- Sign-ins under way (between /auth/login and /auth/callback), in the store so any replica or a restarted
-- server completes them. Only hashes: the state's, and the login cookie's (from which nonce and PKCE verifier
-- are derived), so nothing here can finish someone's sign-in.
CREATE TABLE IF NOT EXISTS signin_logins (
    state_hash TEXT COLLATE "C" PRIMARY KEY,
    binding_hash TEXT COLLATE "C" NOT NULL,
    created_s DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS signin_logins_created ON signin_logins (created_s);
