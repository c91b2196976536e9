// Starts the bundled Swagger UI on the OpenAPI 3.0 copy of the API description (see lggseg/serve/docs.py).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/docs/openapi-3.0.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
