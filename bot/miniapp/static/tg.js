// Telegram Mini App glue, written here: Telegram's telegram-web-app.js carries no licence to copy it.
// Telegram hands a Mini App its launch parameters in the URL's fragment (tgWebAppData = the signed initData,
// tgWebAppThemeParams = the chat's colours); a page that loaded Telegram's script (or a test's stub) has them
// on window.Telegram.WebApp instead. Outside Telegram both are absent: the page says so instead of failing.
(function () {
  "use strict";
  const fragment = new URLSearchParams(location.hash.slice(1));
  const webApp = (window.Telegram && window.Telegram.WebApp) || null;
  const root = document.documentElement;

  function parsed(text) {
    try { return JSON.parse(text || "{}") || {}; } catch (e) { return {}; }
  }

  function luminance(hex) {
    const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
    if (!m) return null;
    return (0.2126 * parseInt(m[1], 16) + 0.7152 * parseInt(m[2], 16) + 0.0722 * parseInt(m[3], 16)) / 255;
  }

  // the same CSS variables Telegram's script sets: --tg-theme-bg-color, --tg-theme-text-color, ...
  function applyTheme(params) {
    for (const [key, value] of Object.entries(params || {})) {
      if (typeof value === "string" && /^#[0-9a-f]{3,8}$/i.test(value)) {
        root.style.setProperty("--tg-theme-" + key.replace(/_/g, "-"), value);
      }
    }
    const light = luminance((params || {}).bg_color);
    const scheme = (webApp && webApp.colorScheme) || (light === null ? null : light < 0.5 ? "dark" : "light");
    if (scheme) root.dataset.scheme = scheme;
    document.dispatchEvent(new CustomEvent("tg-theme"));
  }

  // Telegram's clients deliver events by calling window.Telegram.WebView.receiveEvent (apps) or postMessage (web)
  function onEvent(type, data) {
    if (type === "theme_changed" && data) applyTheme(data.theme_params);
  }
  window.Telegram = window.Telegram || {};
  if (!window.Telegram.WebView) window.Telegram.WebView = { receiveEvent: onEvent };
  window.addEventListener("message", (e) => {
    if (e.origin !== "https://web.telegram.org") return;
    const m = parsed(e.data);
    onEvent(m.eventType, m.eventData);
  });

  function postEvent(type, data) {
    const body = JSON.stringify(data || {});
    try {
      if (window.TelegramWebviewProxy) window.TelegramWebviewProxy.postEvent(type, body);
      else if (window.parent !== window) {
        window.parent.postMessage(JSON.stringify({ eventType: type, eventData: data || {} }), "https://web.telegram.org");
      }
    } catch (e) { /* outside Telegram: nobody listens */ }
  }

  const theme = (webApp && webApp.themeParams) || parsed(fragment.get("tgWebAppThemeParams"));
  applyTheme(theme);
  if (webApp && typeof webApp.onEvent === "function") {
    webApp.onEvent("themeChanged", () => applyTheme(webApp.themeParams));
  }

  window.tg = {
    initData: (webApp && webApp.initData) || fragment.get("tgWebAppData") || "",
    inTelegram: Boolean(webApp || fragment.get("tgWebAppData")),
    ready() {
      if (webApp && typeof webApp.ready === "function") { webApp.ready(); if (webApp.expand) webApp.expand(); }
      else { postEvent("web_app_ready"); postEvent("web_app_expand"); }
    },
  };
})();
