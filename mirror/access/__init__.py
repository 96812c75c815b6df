"""Who is pulling and what they may pull: identities, password checks, tokens, the policy."""
