/**
 * Entry point of the visualiser page: builds the app in `#app` and opens what the URL names.
 * @module
 */
import { App } from './app.js';
import './style.css';

const root = document.getElementById('app');
if (root === null) throw new Error('index.html has no #app element');
const app = new App(root);
void app.fromUrl();
