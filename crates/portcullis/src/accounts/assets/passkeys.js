// Passkeys in the browser for Portcullis's account pages.
//
// The gateway (webauthn-rs) sends WebAuthn options as JSON with every binary
// field as base64url text; navigator.credentials.create()/get() want
// ArrayBuffers, and return a PublicKeyCredential full of ArrayBuffers. This
// script converts both ways and nothing else: the page fetches the options,
// calls one of the two functions below and posts the returned JSON back.
//
// Served as a static file under `script-src 'self'`: no inline script, no
// eval, no external assets, no build step.
//
//   window.portcullisPasskeys.register(options)     -> Promise<string>
//   window.portcullisPasskeys.authenticate(options, {signal}) -> Promise<string>
//
// `options` is the gateway's JSON, as a string or already parsed. The promise
// resolves to the JSON text to post back, and rejects with the browser's
// DOMException (NotAllowedError when the user cancels or the prompt times
// out, InvalidStateError when registering an authenticator that already holds
// one of the account's passkeys) or a TypeError for options it cannot use.
(function () {
  "use strict";

  // --- base64url <-> ArrayBuffer ---------------------------------------------

  function toBuffer(base64url) {
    if (typeof base64url !== "string") {
      throw new TypeError("passkeys: expected a base64url string");
    }
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    base64 += "===".slice((base64.length + 3) % 4);
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function parse(options) {
    var parsed = typeof options === "string" ? JSON.parse(options) : options;
    if (!parsed || typeof parsed.publicKey !== "object") {
      throw new TypeError("passkeys: the options have no publicKey member");
    }
    return parsed;
  }

  // Credential descriptors ({type, id, transports?}) with their id decoded.
  function descriptors(list) {
    return (list || []).map(function (descriptor) {
      var copy = { type: descriptor.type, id: toBuffer(descriptor.id) };
      if (descriptor.transports) {
        copy.transports = descriptor.transports;
      }
      return copy;
    });
  }

  // Only the client extension outputs the gateway reads, as plain JSON (some
  // extensions return ArrayBuffers that JSON.stringify would mangle).
  function extensionResults(credential, names) {
    var all = credential.getClientExtensionResults ? credential.getClientExtensionResults() : {};
    var kept = {};
    if (names.credProps && all.credProps && typeof all.credProps.rk === "boolean") {
      kept.credProps = { rk: all.credProps.rk };
    }
    if (typeof all.appid === "boolean") {
      kept.appid = all.appid;
    }
    return kept;
  }

  // --- registration --------------------------------------------------------

  // Options: webauthn-rs's CreationChallengeResponse,
  //   {"publicKey": {"rp": {...}, "user": {"id": b64url, "name", "displayName"},
  //    "challenge": b64url, "pubKeyCredParams": [...], "timeout", "attestation",
  //    "authenticatorSelection": {...}, "excludeCredentials": [{"type", "id": b64url}],
  //    "extensions": {...}}}
  // Answer: webauthn-rs's RegisterPublicKeyCredential,
  //   {"id", "rawId": b64url, "type": "public-key",
  //    "response": {"attestationObject": b64url, "clientDataJSON": b64url, "transports": [...]|null},
  //    "extensions": {"credProps": {"rk": bool}}?}
  function register(options) {
    var publicKey;
    try {
      publicKey = Object.assign({}, parse(options).publicKey);
      publicKey.challenge = toBuffer(publicKey.challenge);
      publicKey.user = Object.assign({}, publicKey.user, { id: toBuffer(publicKey.user.id) });
      if (publicKey.excludeCredentials) {
        publicKey.excludeCredentials = descriptors(publicKey.excludeCredentials);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return navigator.credentials.create({ publicKey: publicKey }).then(function (credential) {
      var response = credential.response;
      return JSON.stringify({
        id: credential.id,
        rawId: toBase64url(credential.rawId),
        type: credential.type,
        response: {
          attestationObject: toBase64url(response.attestationObject),
          clientDataJSON: toBase64url(response.clientDataJSON),
          transports: response.getTransports ? response.getTransports() : null,
        },
        extensions: extensionResults(credential, { credProps: true }),
      });
    });
  }

  // --- authentication ------------------------------------------------------

  // Options: webauthn-rs's RequestChallengeResponse,
  //   {"publicKey": {"challenge": b64url, "timeout", "rpId", "userVerification",
  //    "allowCredentials": [{"type", "id": b64url}], "extensions": {...}?},
  //    "mediation": "conditional"?}
  // With "mediation": "conditional" the browser offers passkeys in the
  // autofill of an <input autocomplete="username webauthn"> instead of a
  // prompt; pass an AbortSignal (second argument) to cancel that wait when the
  // user signs in another way.
  // Answer: webauthn-rs's PublicKeyCredential,
  //   {"id", "rawId": b64url, "type": "public-key",
  //    "response": {"authenticatorData": b64url, "clientDataJSON": b64url,
  //                 "signature": b64url, "userHandle": b64url|null},
  //    "extensions": {}}
  function authenticate(options, settings) {
    var request;
    try {
      var parsed = parse(options);
      var publicKey = Object.assign({}, parsed.publicKey);
      publicKey.challenge = toBuffer(publicKey.challenge);
      publicKey.allowCredentials = descriptors(publicKey.allowCredentials);
      request = { publicKey: publicKey };
      if (parsed.mediation) {
        request.mediation = parsed.mediation;
      }
      if (settings && settings.signal) {
        request.signal = settings.signal;
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return navigator.credentials.get(request).then(function (credential) {
      var response = credential.response;
      return JSON.stringify({
        id: credential.id,
        rawId: toBase64url(credential.rawId),
        type: credential.type,
        response: {
          authenticatorData: toBase64url(response.authenticatorData),
          clientDataJSON: toBase64url(response.clientDataJSON),
          signature: toBase64url(response.signature),
          userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
        },
        extensions: extensionResults(credential, {}),
      });
    });
  }

  window.portcullisPasskeys = Object.freeze({ register: register, authenticate: authenticate });
})();
