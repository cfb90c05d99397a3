/**
 * The layering check (`npm run layers`, part of `npm run check`). docs/architecture.md explains
 * the layers; this file is their executable form: change both together.
 *
 * LAYERS lists the folders of src/ bottom to top. A folder may import its own files, any folder
 * of a lower layer, and the folders listed BEFORE it in its own layer; nothing else. So an import
 * from a lower layer to a higher one fails, and so does any cycle between folders (a strict
 * order has none). Inside one folder, `no-circular` forbids cycles between files, type-only
 * imports included (they still tie the two files' meaning together).
 *
 * Above src/ sit the entry points and harnesses: workers/ (shipped in the image) may import src/
 * only; bench/ and test/ may import anything; src/ imports none of them.
 */
const LAYERS = [
  // Foundations: no domain knowledge; everything may use them.
  ['foundations', ['errors', 'ids', 'async', 'log', 'events', 'metrics']],
  // The media plane's and the policy's pure building blocks: no network, no store.
  ['domain', ['rtp', 'media', 'crypto', 'gate']],
  // Adapters: each wraps one outside system (S3, mediasoup, the control WebSocket, HTTP).
  ['adapters', ['storage', 'audit', 'sfu', 'control', 'http', 'db', 'sip']],
  // Services: use cases built from adapters and domain.
  // access (the people's side) sits after the control plane's services it reads (catalogue,
  // erasure ledger); identity (sign-in, sessions, service tokens) and web (pages, client code)
  // build on it.
  ['services', ['recorder', 'compliance', 'callcontrol', 'dashboard', 'softphone', 'catalogue', 'erasure', 'caps', 'facts', 'stream', 'siprec', 'mediathreads', 'access', 'identity', 'web']],
  // Composition: configuration and the roots that assemble a process.
  ['composition', ['config', 'api', 'controlplane', 'app', 'cli']],
];

const order = LAYERS.flatMap(([layer, folders]) => folders.map((folder) => ({ layer, folder })));
const known = order.map((o) => o.folder).join('|');

/** One rule per folder: it may not import any folder ranked above it. */
const upwardRules = order.flatMap(({ layer, folder }, rank) => {
  const above = order.slice(rank + 1);
  if (above.length === 0) return [];
  const higher = above.map((o) => o.folder);
  return [
    {
      name: `upward-from-${folder}`,
      comment:
        `src/${folder} (${layer}) may not import ${higher.join(', ')}: they are above it ` +
        '(see docs/architecture.md "Layers"). Move the shared piece down, or declare the small ' +
        'interface you need in the lower module and let the composition root pass it in.',
      severity: 'error',
      from: { path: `^src/${folder}/` },
      to: { path: `^src/(${higher.join('|')})/` },
    },
  ];
});

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'Import cycles (type-only ones included) make the order of initialisation and of understanding undefined.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...upwardRules,
    {
      name: 'unlayered-folder',
      comment: 'Every folder of src/ has a place in LAYERS (.dependency-cruiser.cjs) and in docs/architecture.md.',
      severity: 'error',
      from: { path: '^src/', pathNot: `^src/(${known})/` },
      to: {},
    },
    {
      name: 'to-unlayered-folder',
      comment: 'Every folder of src/ has a place in LAYERS (.dependency-cruiser.cjs) and in docs/architecture.md.',
      severity: 'error',
      from: {},
      to: { path: '^src/', pathNot: `^src/(${known})/` },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import the check cannot resolve is an import it cannot judge.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'src-imports-no-harness',
      comment: 'src/ is what ships: it never imports entry points, benchmarks, tests or scripts.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(workers|bench|test|scripts|media-fixtures)/' },
    },
    {
      name: 'workers-import-src-only',
      comment: 'workers/ ships in the image without bench/ and test/ (the demo may start the development S3 server from scripts/s3/ and the local OpenID provider from scripts/devIdp/).',
      severity: 'error',
      from: { path: '^workers/' },
      to: { path: '^(bench|test)/|^scripts/(?!s3/devServer\\.ts$|devIdp/devIdp\\.ts$)' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/' },
    // Type-only imports count: a type cycle is still a cycle of meaning.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
