/**
 * impl/: the plain reference implementation. Every protocol decision as synchronous functions over
 * plain data; see WHITEPAPER.md for the rules each module cites.
 * @module
 */
export * from './session-state.js';
export * from './prekeys.js';
export * from './pqxdh.js';
export * from './double-ratchet.js';
export * from './session-record.js';
export * from './state-codec.js';
export * from './abstract.js';
export * from './server.js';
export * from './server-codec.js';
export * from './sesame.js';
export * from './sesame-codec.js';
export * from './device.js';
