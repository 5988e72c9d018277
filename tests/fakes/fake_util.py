"""What every fake server shares: a throwaway CA and its certificate, sites on
127.0.0.1, atomic writes, a control API that answers bad input with a 400, and
quiet logs for clients that drop mid-answer.

    from fake_util import bad_input, make_tls, quiet_resets, start_site, write_atomic
"""
import logging
import os
import ssl

from aiohttp import web
import trustme


class _DropResets(logging.Filter):
    """Clients that drop mid-answer (and drop faults) are expected in tests."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (ConnectionError, RuntimeError))


def quiet_resets():
    logging.getLogger("aiohttp.server").addFilter(_DropResets())


def make_tls(directory):
    """A server context for 127.0.0.1 and localhost; the CA goes to <directory>/ca.pem."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = os.path.join(directory, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx, ca_path


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


async def start_site(runner, port, tls):
    """Serves runner (set up) on 127.0.0.1:port (0: any); returns the port."""
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls, backlog=256)
    await site.start()
    return site._server.sockets[0].getsockname()[1]


@web.middleware
async def bad_input(request, handler):
    """Any bad control request gets a 400 that says why; the fake stays up."""
    try:
        return await handler(request)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise web.HTTPBadRequest(text="%s: %s" % (type(e).__name__, e))
