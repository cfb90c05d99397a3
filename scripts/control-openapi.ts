/**
 * Writes docs/control-plane-openapi.json from the control plane's route schemas
 * (`npm run docs:openapi`). test/unit/controlplane/openapi.test.ts fails when the committed file
 * differs from what the code generates, so the document cannot drift from the API.
 */
import { writeFileSync } from 'node:fs';
import { OPENAPI_DOC_PATH, formatOpenApi, openApiDocument } from '../src/controlplane/openapi.ts';

writeFileSync(OPENAPI_DOC_PATH, formatOpenApi(await openApiDocument()));
console.log(`wrote ${OPENAPI_DOC_PATH}`);
