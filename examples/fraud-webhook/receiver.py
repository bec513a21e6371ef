"""A stand-in for Slack or a pager: prints every JSON body POSTed to it, one a line, and
answers 200. Usage: receiver.py PORT"""
import http.server
import sys
import threading

# Requests are served on threads: a line is written whole, under a lock, so that two alerts
# never share a line.
lock = threading.Lock()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock:
            sys.stdout.write(f"webhook: {body}\n")
            sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
