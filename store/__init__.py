"""Persistence shared by the API and the workers: settings, database models, migrations,
repositories (functions over a session that never commit) and the artifact store."""
