"""A small same-origin web server for the OHIF viewer test (standard library only).

It serves OHIF's prebuilt static files (``tests/viewer/ohif/``, unpacked by
``tests/viewer/setup.sh``), answers ``/app-config.js`` with a configuration whose one DICOMweb
data source is this same origin, gives ``index.html`` for the viewer's app routes
(``/viewer?StudyInstanceUIDs=…``), and proxies ``/dicom-web/…`` to Orthanc's DICOMweb plugin,
adding Orthanc's basic-auth header so that the browser never sees a credential and no CORS
is involved. Loopback only.

Run by hand: ``python -m tests.viewer.ohif_server --orthanc http://127.0.0.1:8042
--user U --password P`` (the password may come from ``$ORTHANC_PASSWORD``).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import mimetypes
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
OHIF_DIST = HERE / "ohif"
DICOMWEB_PREFIX = "/dicom-web/"
CHUNK = 1 << 16
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade", "content-length"}

APP_CONFIG = """/* Written by tests/viewer/ohif_server.py: one DICOMweb source, same origin. */
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (Hepatica test)',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


class OhifServer:
    """``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread; ``stop()`` ends it."""

    def __init__(self, orthanc_url: str, user: str, password: str, port: int = 0,
                 dist: Path = OHIF_DIST) -> None:
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(f"no OHIF build in {dist}: run tests/viewer/setup.sh")
        target = urllib.parse.urlsplit(orthanc_url)
        if target.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"loopback Orthanc only, not {orthanc_url}")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        handler = _handler(dist.resolve(), target.hostname, target.port or 80,
                           target.path.rstrip("/"), f"Basic {token}")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ohif-server",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> OhifServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def _handler(dist: Path, host: str, port: int, base_path: str,
             authorization: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads the browser's console, not the access log

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith(DICOMWEB_PREFIX) or path == DICOMWEB_PREFIX.rstrip("/"):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, APP_CONFIG.encode(), "application/javascript")
            else:
                self._static(path)


        def _static(self, path: str) -> None:
            relative = urllib.parse.unquote(path).lstrip("/")
            file = (dist / relative).resolve()
            if not file.is_relative_to(dist) or not file.is_file():
                # an app route (/viewer, /segmentation, …) or a missing asset: the SPA shell,
                # except for names that look like files, which get a real 404
                if "." in Path(relative).name:
                    self._send(404, b"not found", "text/plain")
                    return
                file = dist / "index.html"
            kind = _content_type(file)
            self._send(200, file.read_bytes(), kind,
                       cache="no-cache" if file.name == "index.html" else "max-age=3600")

        def _send(self, status: int, body: bytes, kind: str, cache: str = "no-cache") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self) -> None:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("accept", "accept-encoding", "range")}
            headers["Authorization"] = authorization
            # Orthanc's DICOMweb plugin writes absolute URLs (RetrieveURL, BulkDataURI) from
            # the Host header it gets: this server's origin, so the browser stays same-origin
            headers["Host"] = self.headers.get("Host", f"{host}:{port}")
            upstream = http.client.HTTPConnection(host, port, timeout=120)
            try:
                upstream.request("GET", base_path + self.path, headers=headers)
                response = upstream.getresponse()
            except OSError as exc:
                upstream.close()
                self._send(502, f"Orthanc unreachable: {exc}".encode(), "text/plain")
                return
            try:
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "www-authenticate":
                        self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := response.read(CHUNK):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True  # the browser sees a cut response
            finally:
                upstream.close()

    return Handler


def _content_type(file: Path) -> str:
    if file.suffix == ".wasm":
        return "application/wasm"
    if file.suffix in (".js", ".mjs"):
        return "application/javascript"
    return mimetypes.guess_type(file.name)[0] or "application/octet-stream"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orthanc", required=True)
    parser.add_argument("--user", default="orthanc")
    parser.add_argument("--password", default=os.environ.get("ORTHANC_PASSWORD", ""))
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    server = OhifServer(args.orthanc, args.user, args.password, args.port).start()
    print(f"OHIF on {server.url}/ (Ctrl-C stops)", flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
