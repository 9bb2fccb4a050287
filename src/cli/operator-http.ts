import http from 'node:http';
import https from 'node:https';

// One request of the operator CLI (`killswitch kill | kills | unkill`) to the control plane, over
// node:http or node:https rather than fetch: Node's fetch cannot present a client certificate, and a
// control plane with TLS_CLIENT_CA_FILE refuses every connection without one, break-glass kills included.
// Server certificates are verified against Node's list plus NODE_EXTRA_CA_CERTS, as fetch did.

export interface OperatorRequest {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** Client certificate and key (PEM) for mutual TLS; https:// only. */
  clientTls?: { cert: Buffer; key: Buffer };
  timeoutMs: number;
}

/** Why no answer came: the socket or TLS error code (ECONNREFUSED, ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED ...) and its message. */
export class OperatorRequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Sends the request on a connection of its own and resolves with the status, the content type and the
 * body as text. `timeoutMs` bounds the whole exchange, not only each silence: an answer trickling in a
 * byte at a time (a stuck proxy) would otherwise hold a break-glass script for ever.
 */
export function operatorRequest(req: OperatorRequest): Promise<{ status: number; text: string; contentType?: string }> {
  const secure = req.url.protocol === 'https:';
  const payload = req.body === undefined ? undefined : Buffer.from(req.body);
  const options: https.RequestOptions = {
    method: req.method,
    agent: false,
    headers: { ...req.headers, ...(payload ? { 'content-length': String(payload.length) } : {}) },
    ...(secure && req.clientTls ? { cert: req.clientTls.cert, key: req.clientTls.key } : {}),
  };
  return new Promise((resolve, reject) => {
    const request = (secure ? https.request : http.request)(req.url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err: NodeJS.ErrnoException) => reject(new OperatorRequestError(err.code ?? 'ERROR', `the answer broke off (${err.message})`)));
      res.on('end', () => {
        clearTimeout(deadline);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ...(res.headers['content-type'] ? { contentType: res.headers['content-type'] } : {}) });
      });
    });
    const timedOut = () => new OperatorRequestError('ETIMEDOUT', `no complete answer within ${req.timeoutMs / 1000} s`);
    const deadline = setTimeout(() => {
      const err = timedOut();
      request.destroy(err);
      reject(err);
    }, req.timeoutMs);
    request.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(deadline);
      reject(err instanceof OperatorRequestError ? err : new OperatorRequestError(err.code ?? 'ERROR', err.message));
    });
    request.end(payload);
  });
}

/**
 * The hint for an error a control plane requiring mutual TLS gives a client without a certificate: the
 * handshake alert, or a reset when the socket closes before the alert is read.
 */
export function clientCertificateHint(err: OperatorRequestError, secure: boolean, withCertificate: boolean): string {
  if (!secure) return '';
  if (!withCertificate && /^(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET|EPIPE)$/.test(err.code)) {
    return '. If the control plane requires mutual TLS (TLS_CLIENT_CA_FILE), set KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE to a client certificate its CA signed and that certificate\'s key';
  }
  if (withCertificate && /^ERR_SSL_(TLSV1_ALERT_UNKNOWN_CA|SSLV3_ALERT_BAD_CERTIFICATE)$/.test(err.code)) {
    return ". The control plane refused the certificate in KILLSWITCH_CLIENT_CERT_FILE: its TLS_CLIENT_CA_FILE must hold the CA that signed it";
  }
  if (/CERT|SIGNATURE|SELF_SIGNED|ISSUER/.test(err.code)) {
    return ". The control plane's certificate is not trusted: for a private CA, set NODE_EXTRA_CA_CERTS to that CA's PEM file";
  }
  return '';
}
