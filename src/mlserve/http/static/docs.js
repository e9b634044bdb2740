// The API page: Swagger UI over this server's own OpenAPI document. Nothing is fetched
// from anywhere else: no validator badge, no remote configuration, no URL from the query.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/v2/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  queryConfigEnabled: false,
  deepLinking: true,
  tryItOutEnabled: true,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  presets: [SwaggerUIBundle.presets.apis],
});
