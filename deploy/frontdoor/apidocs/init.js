// Renders /openapi.yaml (relative to the page, /docs) with Swagger UI.
// A file of its own, not an inline script: the page's
// Content-Security-Policy allows scripts from the front door only.
window.ui = SwaggerUIBundle({
  url: "openapi.yaml",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
  // "Try it out" calls the API of the server in the description's
  // `servers` (this front door), with the bearer token given under
  // "Authorize".
  persistAuthorization: false,
});
