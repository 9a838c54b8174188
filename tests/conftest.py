from fixtures_servers import *  # noqa: F401,F403
