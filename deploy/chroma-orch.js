// njs helpers of deploy/nginx.conf (loaded with js_import from nginx.conf's
// directory; needs the njs module: Debian's libnginx-mod-http-js).
import crypto from 'crypto';

// SHA-256 (hex) of the request's credentials, for the auth cache key. Cache
// files store their key: with the digest instead of the headers, no token
// reaches the disk. Header values cannot contain a newline, so the two are
// joined unambiguously.
function credentialDigest(r) {
    const authorization = r.variables.http_authorization || '';
    const token = r.variables.http_x_chroma_token || '';
    return crypto.createHash('sha256').update(`${authorization}\n${token}`).digest('hex');
}

export default { credentialDigest };
