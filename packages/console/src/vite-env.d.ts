// Stylesheets are imported for their side effect: Vite bundles them.
/// <reference types="vite/client" />
